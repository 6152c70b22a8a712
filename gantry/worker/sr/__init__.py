"""Super-resolution: image operations, PSNR/SSIM as the SR literature computes them, tiled upscaling."""
