/**
 * A request's picture or video, made ready for the model: decoded, cut or sampled, preprocessed as the
 * model's processor does, with where each visual token lies (one grid per view, tile or frame) and which
 * placeholder the prompt names it by.
 *
 *   LLaVA-1.5:        a picture → one padded square view (image.ts)
 *   LLaVA-NeXT:       a picture → AnyRes views (anyres/)
 *   LLaVA-NeXT-Video: a picture as LLaVA-NeXT; a video (MP4/WebM bytes through ffmpeg, or a list of encoded
 *                     frames) → up to `maxFrames` frames sampled uniformly (video/)
 *
 * Bad input (undecodable, beyond a limit, a video for a model that reads none) is an InvalidRequestError.
 */
import { anyresGrids, anyresSpecOf } from "./anyres/layout.js";
import { preprocessAnyres } from "./anyres/preprocess.js";
import { InvalidRequestError } from "./errors.js";
import type { VisualGrid } from "./events.js";
import { DEFAULT_IMAGE_LIMITS, decodePicture, type ImageLimits, preprocessPicture } from "./image.js";
import type { RgbPicture } from "./pad-resize.js";
import type { GenerateParams, VideoInput } from "./plan.js";
import type { VisualInput } from "./runtime/visual-encoder.js";
import { concatFloats } from "./twig/rows.js";
import { DEFAULT_VIDEO_LIMITS, decodeVideo, type VideoLimits } from "./video/decode.js";
import { frameCrop, frameGrids, pooledSide, preprocessFrame, sampleFrameIndices } from "./video/frames.js";
import { paddedSquareGrid } from "./visual-grid.js";
import { frameTokens, pictureTokens, viewTokens } from "./visual-tokens.js";
import type { LlavaConfig } from "./weights.js";

export interface MediaLimits {
  image: ImageLimits;
  video: VideoLimits;
}

export const DEFAULT_MEDIA_LIMITS: MediaLimits = { image: DEFAULT_IMAGE_LIMITS, video: DEFAULT_VIDEO_LIMITS };

export interface PreparedVisual {
  input: VisualInput;
  /** N: the visual tokens the input gives. */
  numVisual: number;
  /** Where they lie: one grid per view, tile or frame. */
  grids: VisualGrid[];
  /** The placeholder the prompt names the input by. */
  placeholder: "<image>" | "<video>";
  /** Every view's or frame's pixel values, one after the other ([views, 3, S, S]). */
  pixelValues: Float32Array;
  /** A picture's (height, width); a video's frame size. */
  size: [number, number];
  /** A video's sampled frames: their indices in the clip (or in the list of frames). */
  frameIndices?: number[];
}

/** The request's picture or video for a model of `config`. */
export async function prepareVisual(
  params: Pick<GenerateParams, "image" | "video">,
  config: LlavaConfig,
  limits: MediaLimits = DEFAULT_MEDIA_LIMITS,
): Promise<PreparedVisual> {
  if (params.image && params.video) throw new InvalidRequestError("send a picture or a video, not both");
  if (params.video) return prepareVideo(params.video, config, limits);
  if (!params.image) throw new InvalidRequestError("the request has no picture (or video)");
  const spec = { imageSize: config.vision.imageSize, mean: config.imageMean, std: config.imageStd };
  if (config.anyres) {
    const anyres = anyresSpecOf(config.anyres.gridPinpoints, config.vision);
    const { views, layout } = await preprocessAnyres(params.image, spec, anyres, limits.image);
    return {
      input: { kind: "anyres", views, layout },
      numVisual: pictureTokens(config, ...layout.imageSize),
      grids: anyresGrids(layout, anyres.tile),
      placeholder: "<image>",
      pixelValues: concatFloats(views),
      size: [layout.imageSize[0], layout.imageSize[1]],
    };
  }
  const { pixelValues, geometry } = await preprocessPicture(params.image, spec, limits.image);
  const N = viewTokens(config);
  return {
    input: { kind: "image", pixelValues },
    numVisual: N,
    grids: [paddedSquareGrid(geometry, config.vision.imageSize / config.vision.patchSize, N)],
    placeholder: "<image>",
    pixelValues,
    size: [geometry.height, geometry.width],
  };
}

async function prepareVideo(video: VideoInput, config: LlavaConfig, limits: MediaLimits): Promise<PreparedVisual> {
  const perFrame = frameTokens(config);
  if (!config.video || perFrame === undefined)
    throw new InvalidRequestError("this model reads pictures only: send an image, not a video");
  if (video.data && video.frames?.length) throw new InvalidRequestError("send a video's bytes or its frames, not both");
  const S = config.vision.imageSize;
  let pictures: { picture: RgbPicture; width: number; height: number }[];
  let frameIndices: number[];
  if (video.data) {
    const decoded = await decodeVideo(video.data, limits.video);
    pictures = decoded.pictures.map((picture) => ({ picture, width: picture.width, height: picture.height }));
    frameIndices = decoded.indices;
  } else {
    const frames = video.frames ?? [];
    if (frames.length === 0) throw new InvalidRequestError("the video has no frames");
    frameIndices = sampleFrameIndices(frames.length, limits.video.maxFrames);
    pictures = [];
    for (const i of frameIndices) {
      const largest = (g: { width: number; height: number }) => {
        const crop = frameCrop(g.width, g.height, S);
        return Math.max(S, crop.width, crop.height);
      };
      let d: Awaited<ReturnType<typeof decodePicture>>;
      try {
        d = await decodePicture(frames[i], largest, limits.image);
      } catch (err) {
        throw new InvalidRequestError(`video frame ${i}: ${(err as Error).message}`);
      }
      pictures.push({ picture: d.picture, width: d.declaredWidth, height: d.declaredHeight });
    }
    const first = pictures[0];
    const odd = pictures.findIndex((p) => p.width !== first.width || p.height !== first.height);
    if (odd >= 0)
      throw new InvalidRequestError(
        `a video's frames must share one size: frame ${frameIndices[odd]} is ${pictures[odd].width}x${pictures[odd].height}, frame ${frameIndices[0]} ${first.width}x${first.height}`,
      );
  }
  const spec = { imageSize: S, mean: config.imageMean, std: config.imageStd };
  const frames = pictures.map((p) => preprocessFrame(p.picture, spec, p));
  const { width, height } = pictures[0];
  const side = pooledSide(S / config.vision.patchSize, config.video.poolStride);
  return {
    input: { kind: "video", frames },
    numVisual: frames.length * perFrame,
    grids: frameGrids(frames.length, side, width, height, S),
    placeholder: "<video>",
    pixelValues: concatFloats(frames),
    size: [height, width],
    frameIndices,
  };
}
