// Big photos are shrunk here before they are sent: a 12 MP phone photo goes as a JPEG of a few
// hundred kB with its long side at the page's size (ClientSettings.client_shrink_max_side), and
// the API, told `original_size`, still answers with boxes in the photo's own pixels.
const maxSide = Number(document.getElementById("dropzone").dataset.shrinkMaxSide) || 0;
const JPEG_QUALITY = 0.9; // as the SDK's shrink: boxes as the whole photo's (docs/performance.md)
const SHRINKABLE = new Set(["image/jpeg", "image/png", "image/webp", "image/bmp"]);

// Whether the page may shrink `file` (its pixels are unknown until it is decoded).
export function mayShrink(file) {
  return maxSide > 0 && SHRINKABLE.has(file.type);
}

async function toJpeg(bitmap, width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff"; // transparency onto white, as the API does
  ctx.fillRect(0, 0, width, height);
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(bitmap, 0, 0, width, height);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", JPEG_QUALITY));
}

// `file` upright with its long side at the page's size, as {blob, originalSize: "WxH"}; null
// when it is not larger than that, cannot be decoded here (the API then says why) or is a GIF.
export async function shrinkPhoto(file) {
  if (!mayShrink(file)) return null;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    return null;
  }
  try {
    const { width, height } = bitmap; // upright: the EXIF rotation is applied
    const scale = maxSide / Math.max(width, height);
    if (scale >= 1) return null;
    const size = [Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale))];
    const blob = await toJpeg(bitmap, ...size);
    return blob ? { blob, originalSize: `${width}x${height}` } : null;
  } finally {
    bitmap.close();
  }
}
