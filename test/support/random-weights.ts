/** Seeded random weights for engine tests: the tiny-model generator's own. */
export {
  randomDecoderLayers,
  randomLlavaWeights,
  randomTensor,
  tinyTextConfig,
} from "../../gpu-service/tools/make-tiny/tiny-model.js";
