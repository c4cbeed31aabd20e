/**
 * twigvlm.v1.InferenceService. ListModels answers from the registry.
 * Generate answers UNIMPLEMENTED until the engine is wired in (the one
 * placeholder the README names).
 */
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { InferenceService } from "@twigserve/proto/twigvlm/v1/inference_pb.js";
import type { ModelEntry } from "./registry.js";

export interface InferenceDeps {
  models: () => ModelEntry[];
  defaultModel: string;
}

export function inferenceService(deps: InferenceDeps): ServiceImpl<typeof InferenceService> {
  return {
    listModels() {
      return {
        models: deps.models().map((m) => ({
          name: m.name,
          architecture: m.architecture,
          visualTokens: m.visualTokens,
          numLayers: m.numLayers,
          contextLength: m.contextLength,
          hasTwig: m.twig !== undefined,
          twigK: m.twig?.k ?? 0,
          twigT: m.twig?.t ?? 0,
          finalWipeLayer: m.twig?.finalWipeLayer ?? 0,
          isDefault: m.name === deps.defaultModel,
        })),
      };
    },
    // biome-ignore lint/correctness/useYield: placeholder until the engine lands
    async *generate() {
      throw new ConnectError("Generate is not implemented yet: the engine has not landed", Code.Unimplemented);
    },
  };
}
