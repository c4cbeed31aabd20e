/**
 * The preprocessed picture against PyTorch's: the fixture holds every 8-bit value
 * of the square picture that the training code's pipeline made (RGB, padded to a
 * square with the CLIP mean colour, resized, bicubic: training/data.py
 * square_image); the engine's pixels are normalised floats [3, S, S]. Both are
 * compared over every value, in 8-bit steps (one step is 1/255 before
 * normalising), so that a tolerance reads the same for every channel.
 */

export interface PixelDifference {
  /** Values compared: 3 * S * S. */
  values: number;
  /** Mean |engine - PyTorch| in 8-bit steps. */
  meanSteps: number;
  /** Largest |engine - PyTorch| in 8-bit steps. */
  maxSteps: number;
  /** Share of the values more than half a step apart (a different 8-bit value). */
  differentShare: number;
}

/** Decodes the fixture's base64 uint8 [S, S, 3] picture. */
export function fixturePixels(base64: string): Uint8Array {
  return new Uint8Array(Buffer.from(base64, "base64"));
}

/**
 * Compares normalised engine pixels (CHW float32, `(v / 255 - mean) / std`) with
 * PyTorch's 8-bit HWC values over every value.
 */
export function pixelDifference(
  engine: Float32Array,
  expected: Uint8Array,
  mean: readonly number[],
  std: readonly number[],
): PixelDifference {
  const n = expected.length / 3;
  if (engine.length !== expected.length || !Number.isInteger(n))
    throw new RangeError(`the engine made ${engine.length} pixel values, PyTorch ${expected.length}`);
  let sum = 0;
  let max = 0;
  let different = 0;
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < n; i++) {
      const steps = Math.abs((engine[c * n + i] * std[c] + mean[c]) * 255 - expected[i * 3 + c]);
      sum += steps;
      if (steps > max) max = steps;
      if (steps > 0.5) different++;
    }
  }
  return {
    values: engine.length,
    meanSteps: sum / engine.length,
    maxSteps: max,
    differentShare: different / engine.length,
  };
}

/** The fixture's 8-bit HWC picture as the model's input: `(v / 255 - mean) / std`, float32 [3, S, S]. */
export function normalisePixels(u8: Uint8Array, mean: readonly number[], std: readonly number[]): Float32Array {
  const n = u8.length / 3;
  const out = new Float32Array(u8.length);
  for (let c = 0; c < 3; c++) for (let i = 0; i < n; i++) out[c * n + i] = (u8[i * 3 + c] / 255 - mean[c]) / std[c];
  return out;
}
