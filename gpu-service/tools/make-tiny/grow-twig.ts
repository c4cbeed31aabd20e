/** A fresh twig grown the paper's way: copies of base layers K+1..K+T, the final norm and the LM head. */
import type { LlavaWeights, TwigWeights } from "../../src/engine/weights.js";

const cloneTensor = (t: { shape: number[]; data: Float32Array }) => ({ shape: [...t.shape], data: t.data.slice() });

export function growTwig(base: LlavaWeights, k: number, t: number, finalWipeLayer?: number): TwigWeights {
  const L = base.text.layers.length;
  if (!(Number.isInteger(k) && Number.isInteger(t) && k >= 1 && t >= 1))
    throw new RangeError(`twig K=${k}, T=${t}: both must be positive integers`);
  if (k + t > L) throw new RangeError(`twig K=${k} + T=${t} exceeds the base model's ${L} layers`);
  const kf = finalWipeLayer ?? Math.floor((3 * L) / 4);
  if (!(kf > k && kf <= L)) throw new RangeError(`final wipe layer ${kf} must be in (K=${k}, L=${L}]`);
  const layers = base.text.layers.slice(k, k + t).map((layer) => {
    const copy = structuredClone(layer);
    return copy;
  });
  return {
    k,
    t,
    finalWipeLayer: kf,
    layers,
    norm: { weight: cloneTensor(base.text.norm.weight) },
    lmHead: cloneTensor(base.text.lmHead),
  };
}
