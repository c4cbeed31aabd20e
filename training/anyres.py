"""
LLaVA-NeXT's AnyRes, exactly as Hugging Face transformers does it, in one place that training, the PyTorch
checks and the parity fixtures share.

Preprocessing (`preprocess`, mirroring `LlavaNextImageProcessor.preprocess` with do_resize, do_center_crop,
do_rescale, do_normalize and do_convert_rgb on, for one image):
  1. image_size = (height, width) of the RGB image.
  2. best = select_best_resolution(image_size, image_grid_pinpoints)   (image_processing_utils)
  3. the image resized, aspect kept, to get_patch_output_size(image, best) with PIL bicubic on uint8 pixels
     (`_resize_for_patching`), then padded with zeros (black, before normalisation) to `best`, the odd pixel
     of padding going to the bottom and right (`_pad_for_patching`);
  4. that canvas cut into tiles of crop_size, row by row (`divide_to_patches`);
  5. the whole original image resized to crop_size x crop_size, aspect NOT kept (PIL bicubic), put first;
  6. each view rescaled by 1/255 and normalised with the CLIP mean and std (the per-view shortest-edge resize
     and centre crop are identities at crop_size).
  pixel_values [1 + tiles, 3, crop, crop], and image_size.

Features (`pack_image_features`, mirroring `LlavaNextModel.pack_image_features` for one image): the projected
features of every view [1 + tiles, P*P, d] (P = patches per side, CLS dropped); the base view's P*P come first;
the tiles' features are laid out as one grid of (rows*P) x (cols*P) (`view(rows, cols, P, P, d)`, then
`permute(4, 0, 2, 1, 3)`), `unpad_image` cuts the rows (or columns) that only padding fed, and `image_newline`
closes every row of that grid. Token count: P*P + H' * (W' + 1) for the unpadded grid H' x W'.
"""
import math

import numpy as np
import torch
from PIL import Image

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def select_best_resolution(original_size, possible_resolutions):
    """transformers.image_processing_utils.select_best_resolution: of the (height, width) pinpoints, the one that
    keeps the most of the image's pixels once the image is scaled to fit it, and wastes the least on ties."""
    original_height, original_width = original_size
    best_fit = None
    max_effective_resolution = 0
    min_wasted_resolution = float("inf")
    for height, width in possible_resolutions:
        scale = min(width / original_width, height / original_height)
        downscaled_width, downscaled_height = int(original_width * scale), int(original_height * scale)
        effective_resolution = min(downscaled_width * downscaled_height, original_width * original_height)
        wasted_resolution = (width * height) - effective_resolution
        if effective_resolution > max_effective_resolution or (
            effective_resolution == max_effective_resolution and wasted_resolution < min_wasted_resolution
        ):
            max_effective_resolution = effective_resolution
            min_wasted_resolution = wasted_resolution
            best_fit = (height, width)
    return best_fit


def get_patch_output_size(original_size, target_resolution):
    """transformers.image_processing_utils.get_patch_output_size: (height, width) of the image resized, aspect
    kept, to fit the target resolution."""
    original_height, original_width = original_size
    target_height, target_width = target_resolution
    scale_w = target_width / original_width
    scale_h = target_height / original_height
    if scale_w < scale_h:
        new_width = target_width
        new_height = min(math.ceil(original_height * scale_w), target_height)
    else:
        new_height = target_height
        new_width = min(math.ceil(original_width * scale_h), target_width)
    return new_height, new_width


def get_anyres_image_grid_shape(image_size, grid_pinpoints, tile):
    """modeling_llava_next.get_anyres_image_grid_shape: (rows, columns) of tiles for an image of (height, width)."""
    height, width = select_best_resolution(image_size, grid_pinpoints)
    return height // tile, width // tile


def unpad_image(tensor, original_size):
    """modeling_llava_next.unpad_image: the [C, H, W] feature grid without the rows (or columns) that only the
    padding fed, for an image of (height, width)."""
    original_height, original_width = original_size
    current_height, current_width = tensor.shape[1:]
    original_aspect_ratio = original_width / original_height
    current_aspect_ratio = current_width / current_height
    if original_aspect_ratio > current_aspect_ratio:
        scale_factor = current_width / original_width
        new_height = int(round(original_height * scale_factor, 7))
        padding = (current_height - new_height) // 2
        return tensor[:, padding : current_height - padding, :]
    scale_factor = current_height / original_height
    new_width = int(round(original_width * scale_factor, 7))
    padding = (current_width - new_width) // 2
    return tensor[:, :, padding : current_width - padding]


def normalise(rgb):
    """uint8 [H, W, 3] (numpy) -> float32 [3, H, W]: rescaled by 1/255 (in float64, then float32, as transformers'
    rescale), normalised with the CLIP mean and std in float32 (its normalize). Equal to data.pixels."""
    a = ((rgb.astype(np.float64) * (1 / 255)).astype(np.float32) - MEAN) / STD
    return torch.from_numpy(a.transpose(2, 0, 1).copy())


def views(image, grid_pinpoints, tile, resample=Image.BICUBIC):
    """The image's views before normalisation, as uint8 [H, W, C] arrays (C = 3, or 1 for a label map resized
    with resample=NEAREST): the whole image at tile x tile, then the tiles row by row. Returns (views, best)."""
    arr = np.asarray(image)
    height, width = arr.shape[:2]
    best = select_best_resolution((height, width), grid_pinpoints)
    new_height, new_width = get_patch_output_size((height, width), best)
    resized = np.asarray(image.resize((new_width, new_height), resample=resample))
    paste_x, r_x = divmod(best[1] - new_width, 2)
    paste_y, r_y = divmod(best[0] - new_height, 2)
    pad = ((paste_y, paste_y + r_y), (paste_x, paste_x + r_x)) + (((0, 0),) if resized.ndim == 3 else ())
    padded = np.pad(resized, pad, mode="constant", constant_values=0)
    tiles = [padded[i : i + tile, j : j + tile] for i in range(0, best[0], tile) for j in range(0, best[1], tile)]
    base = np.asarray(image.resize((tile, tile), resample=resample))
    return [base] + tiles, best


def preprocess(image, grid_pinpoints, tile):
    """LlavaNextImageProcessor.preprocess for one image (module doc): (pixel_values [1 + tiles, 3, tile, tile],
    image_size (height, width))."""
    image = image.convert("RGB")
    vs, _ = views(image, grid_pinpoints, tile)
    return torch.stack([normalise(v) for v in vs]), (image.height, image.width)


def pack_image_features(features, image_size, grid_pinpoints, tile, image_newline):
    """LlavaNextModel.pack_image_features for one image: features [1 + tiles, P*P, d] -> [N, d] (module doc)."""
    if features.shape[0] == 1:
        return torch.cat([features[0], image_newline[None]], 0)
    side = int(round(math.sqrt(features.shape[1])))
    base, grid = features[0], features[1:]
    rows, cols = get_anyres_image_grid_shape(image_size, grid_pinpoints, tile)
    grid = grid.view(rows, cols, side, side, -1).permute(4, 0, 2, 1, 3).contiguous()
    grid = grid.flatten(1, 2).flatten(2, 3)
    grid = unpad_image(grid, image_size)
    grid = torch.cat([grid, image_newline[:, None, None].expand(*grid.shape[:-1], 1)], -1)
    return torch.cat([base, grid.flatten(1, 2).transpose(0, 1)], 0)


def token_count(image_size, grid_pinpoints, tile, side):
    """How many visual tokens pack_image_features gives an image of (height, width): side*side for the base
    view, then each row of the unpadded tile grid and its newline."""
    rows, cols = get_anyres_image_grid_shape(image_size, grid_pinpoints, tile)
    grid = unpad_image(torch.zeros(1, rows * side, cols * side), image_size)
    return side * side + grid.shape[1] * (grid.shape[2] + 1)
