/**
 * The vision side as one graph: CLIP ViT (patch conv, class and position
 * embeddings, pre-layernorm, encoder layers with quick-GELU) up to the feature
 * layer, CLS dropped, then the mlp2x_gelu projector.
 * pixel_values [1, 3, S, S] → image_features [1, N, textHidden], and on request
 * cls_attention [1, N]: the attention the CLS token pays each visual token in the
 * feature layer (the last layer run), averaged over heads, which VisionZip-style
 * pruning ranks visual tokens by.
 */
import type { LlavaWeights, VisionLayerWeights } from "../weights.js";
import { GraphBuilder } from "./graph.js";
import { gelu, layerNorm, linear, quickGelu } from "./layers.js";

/** How many encoder layers run for HF's vision_feature_layer (-2 = output of the second-to-last). */
export function visionLayersToRun(numLayers: number, featureLayer: number): number {
  const n = featureLayer < 0 ? numLayers + 1 + featureLayer : featureLayer;
  if (n < 0 || n > numLayers)
    throw new RangeError(`vision feature layer ${featureLayer} is outside a ${numLayers}-layer tower`);
  return n;
}

function selfAttention(
  g: GraphBuilder,
  x: string,
  w: VisionLayerWeights,
  tokens: number,
  width: number,
  heads: number,
): { out: string; probs: string } {
  const hd = width / heads;
  const split = g.ints("split_shape", [1, tokens, heads, hd]);
  const toHeads = (t: string) => g.op1("Transpose", [g.op1("Reshape", [t, split])], { perm: [0, 2, 1, 3] });
  const q = toHeads(linear(g, x, w.q, "vq"));
  const k = toHeads(linear(g, x, w.k, "vk"));
  const v = toHeads(linear(g, x, w.v, "vv"));
  const [kT] = g.op("Transpose", [k], { perm: [0, 1, 3, 2] });
  const scale = g.weight("attn_scale", [], new Float32Array([1 / Math.sqrt(hd)]));
  const [scores] = g.op("Mul", [g.op1("MatMul", [q, kT]), scale]);
  const [probs] = g.op("Softmax", [scores], { axis: -1 });
  const [ctx] = g.op("Transpose", [g.op1("MatMul", [probs, v])], { perm: [0, 2, 1, 3] });
  const [merged] = g.op("Reshape", [ctx, g.ints("merge_shape", [1, tokens, width])]);
  return { out: linear(g, merged, w.out, "vo"), probs };
}

export interface VisionGraphOptions {
  /** Also output cls_attention [1, N] (head-averaged attention of CLS to each visual token in the feature layer). */
  clsAttention?: boolean;
  /** Also output vision_features [1, N, visionHidden]: the selected features before the projector (a video's frames are pooled there). */
  visionFeatures?: boolean;
}

export function visionGraph(weights: LlavaWeights, options: VisionGraphOptions = {}): Uint8Array {
  const { config, vision, projector } = weights;
  const vc = config.vision;
  const grid = vc.imageSize / vc.patchSize;
  const numPatches = grid * grid;
  const tokens = numPatches + 1;
  const width = vc.hiddenSize;
  const g = new GraphBuilder("vision");
  const pixels = g.input("pixel_values", "float32", [1, vc.numChannels, vc.imageSize, vc.imageSize]);

  const kernel = g.weight("patch_embedding", vision.patchEmbedding.shape, vision.patchEmbedding.data);
  const [conv] = g.op("Conv", [pixels, kernel], {
    kernel_shape: [vc.patchSize, vc.patchSize],
    strides: [vc.patchSize, vc.patchSize],
  });
  const [flat] = g.op("Reshape", [conv, g.ints("patch_shape", [1, width, numPatches])]);
  const [patches] = g.op("Transpose", [flat], { perm: [0, 2, 1] });
  const cls = g.weight("class_embedding", [1, 1, width], vision.classEmbedding.data);
  const [seq] = g.op("Concat", [cls, patches], { axis: 1 });
  const pos = g.weight("position_embedding", [1, tokens, width], vision.positionEmbedding.data);
  let [h] = g.op("Add", [seq, pos]);
  h = layerNorm(g, h, vision.preLayerNorm, vc.layerNormEps);

  const run = visionLayersToRun(vision.layers.length, config.visionFeatureLayer);
  const first = config.visionFeatureSelectStrategy === "default" ? 1 : 0;
  const n = tokens - first;
  if (options.clsAttention && run === 0) throw new RangeError("cls attention needs at least one vision layer to run");
  vision.layers.slice(0, run).forEach((w, i) => {
    const a = selfAttention(g, layerNorm(g, h, w.layerNorm1, vc.layerNormEps), w, tokens, width, vc.numHeads);
    if (options.clsAttention && i === run - 1) {
      // probs [1, heads, query, key]: the CLS query's row over the keys that become visual tokens, mean over heads
      const [row] = g.op("Slice", [
        a.probs,
        g.ints("cls_start", [0, first]),
        g.ints("cls_end", [1, tokens]),
        g.ints("cls_axes", [2, 3]),
      ]);
      const [mean] = g.op("ReduceMean", [row, g.ints("head_axis", [1])], { keepdims: 0 });
      const [cls] = g.op("Reshape", [mean, g.ints("cls_shape", [1, n])]);
      g.output(cls, "cls_attention", "float32", [1, n]);
    }
    [h] = g.op("Add", [h, a.out]);
    const act = vc.hiddenAct === "quick_gelu" ? quickGelu : gelu;
    const m = linear(g, act(g, linear(g, layerNorm(g, h, w.layerNorm2, vc.layerNormEps), w.fc1, "fc1")), w.fc2, "fc2");
    [h] = g.op("Add", [h, m]);
  });
  if (config.visionFeatureSelectStrategy === "default") {
    [h] = g.op("Slice", [h, g.ints("start", [1]), g.ints("end", [tokens]), g.ints("axis", [1])]);
  }
  if (options.visionFeatures) g.output(g.op1("Identity", [h]), "vision_features", "float32", [1, n, width]);
  const projected = linear(g, gelu(g, linear(g, h, projector.linear1, "proj1")), projector.linear2, "proj2");
  g.output(projected, "image_features", "float32", [1, n, config.text.hiddenSize]);
  return g.toBytes();
}

/**
 * LLaVA-NeXT-Video's frames after the tower: each frame's patch features [F, P*P, visionHidden] as a P x P
 * grid, pooled stride x stride (`LlavaNextVideoPooler`: nn.AvgPool2d or nn.MaxPool2d, kernel = stride,
 * floor), then the projector, before which transformers pools (`get_video_features`).
 * vision_features [F, P*P, W] → video_features [F, P'*P', textHidden]; and the CLS attention [F, P*P] pooled
 * the same way: patch_cls_attention [F, P*P] → cls_attention [F, P'*P'] (the VisionZip score of a pooled token: its patches' mean, or
 * their max under max pooling).
 */
export function videoPoolGraph(weights: LlavaWeights): Uint8Array {
  const { config, projector } = weights;
  if (!config.video) throw new RangeError("videoPoolGraph needs a LLaVA-NeXT-Video config");
  const vc = config.vision;
  const side = vc.imageSize / vc.patchSize;
  const stride = config.video.poolStride;
  const out = Math.floor(side / stride);
  const width = vc.hiddenSize;
  const g = new GraphBuilder("video_pool");
  const feats = g.input("vision_features", "float32", ["frames", side * side, width]);
  const cls = g.input("patch_cls_attention", "float32", ["frames", side * side]);
  const op = config.video.poolMode === "average" ? "AveragePool" : "MaxPool";
  const pool = (x: string) => g.op1(op, [x], { kernel_shape: [stride, stride], strides: [stride, stride] });
  // [F, P*P, W] -> [F, W, P, P] -> pooled [F, W, P', P'] -> [F, P'*P', W]
  const [grid] = g.op("Reshape", [
    g.op1("Transpose", [feats], { perm: [0, 2, 1] }),
    g.ints("grid", [0, width, side, side]),
  ]);
  const [flat] = g.op("Reshape", [pool(grid), g.ints("pooled", [0, width, out * out])]);
  const [tokens] = g.op("Transpose", [flat], { perm: [0, 2, 1] });
  const projected = linear(g, gelu(g, linear(g, tokens, projector.linear1, "proj1")), projector.linear2, "proj2");
  g.output(projected, "video_features", "float32", ["frames", out * out, config.text.hiddenSize]);
  const [clsGrid] = g.op("Reshape", [cls, g.ints("cls_grid", [0, 1, side, side])]);
  const [clsPooled] = g.op("Reshape", [pool(clsGrid), g.ints("cls_pooled", [0, out * out])]);
  g.output(clsPooled, "cls_attention", "float32", ["frames", out * out]);
  return g.toBytes();
}
