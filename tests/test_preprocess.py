"""Letterbox (GPU/CPU torch) against a numpy reference of YOLOv5's letterbox + cv2.resize(INTER_LINEAR)."""
from __future__ import annotations

import numpy as np
import pytest

from netdef.errors import NetdefError
from netdef.tools.preprocess import letterbox, letterbox_plan, scale_boxes

from helpers import photos

torch = pytest.importorskip("torch")

TOL = 1 / 255 + 1e-6


# ---------------------------------------------------------------- the numpy reference

def ref_resize(img: np.ndarray, nh: int, nw: int) -> np.ndarray:
    """cv2.resize(img, (nw, nh), INTER_LINEAR) for uint8 HxWxC, written out in numpy.

    cv2: source coordinate (d + 0.5) * in/out - 0.5 as float32; weights (1 - f, f) in 11-bit fixed point.
    Columns outside the image take the edge pixel at full weight; rows keep their weights and read the edge
    row twice. Horizontal pass into int (x2048), vertical pass with cv2's SIMD rounding:
    ((b0 * (r0 >> 4)) >> 16) + ((b1 * (r1 >> 4)) >> 16), then (+2) >> 2.
    """
    h, w = img.shape[:2]

    def coords(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray]:
        src = np.array([np.float32((d + 0.5) * (n_in / n_out) - 0.5) for d in range(n_out)], np.float32)
        lo = np.floor(src).astype(np.int64)
        return lo, src - lo.astype(np.float32)

    xs, fx = coords(nw, w)
    ys, fy = coords(nh, h)
    img = img.astype(np.int64)
    rows = np.zeros((h, nw, img.shape[2]), np.int64)
    for d in range(nw):
        s, f = int(xs[d]), np.float32(fx[d])
        if s < 0:
            s, f = 0, np.float32(0)
        if s >= w - 1:
            s, f = w - 1, np.float32(0)
        a0 = int(np.round((np.float32(1) - f) * np.float32(2048)))
        a1 = int(np.round(f * np.float32(2048)))
        rows[:, d] = img[:, s] * a0 + img[:, min(s + 1, w - 1)] * a1
    out = np.zeros((nh, nw, img.shape[2]), np.int64)
    for d in range(nh):
        s, f = int(ys[d]), np.float32(fy[d])
        b0 = int(np.round((np.float32(1) - f) * np.float32(2048)))
        b1 = int(np.round(f * np.float32(2048)))
        r0, r1 = rows[min(max(s, 0), h - 1)], rows[min(max(s + 1, 0), h - 1)]
        out[d] = (((b0 * (r0 >> 4)) >> 16) + ((b1 * (r1 >> 4)) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


def ref_letterbox(img: np.ndarray, new_shape=(640, 640), color=114, auto=False, stride=32):
    """YOLOv5 utils.augmentations.letterbox (scaleup, not scaleFill) with ref_resize; HWC BGR uint8."""
    shape = img.shape[:2]
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:
        dw, dh = np.mod(dw, stride), np.mod(dh, stride)
    dw /= 2
    dh /= 2
    if shape[::-1] != new_unpad:
        img = ref_resize(img, new_unpad[1], new_unpad[0])
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    img = np.pad(img, ((top, bottom), (left, right), (0, 0)), constant_values=color)
    return img, r, (left, top)


def ref_tensor(img_bgr: np.ndarray, new_shape, auto=False) -> tuple[np.ndarray, float, tuple[int, int]]:
    """The network input YOLOv5 feeds: RGB, CHW, /255."""
    out, r, pad = ref_letterbox(img_bgr, new_shape, auto=auto)
    return out[..., ::-1].transpose(2, 0, 1).astype(np.float32) / 255.0, r, pad


# ---------------------------------------------------------------- tests

def test_reference_matches_opencv_when_installed():
    cv2 = pytest.importorskip("cv2")
    worst = 0
    for img in photos(bgr=True):
        for nh, nw in ((640, 640), (333, 517), (img.shape[0] // 2, img.shape[1] // 2), (17, 23)):
            got = ref_resize(img, nh, nw)
            worst = max(worst, int(np.abs(got.astype(int) - cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)).max()))
    print(f"RESULT ref_resize vs cv2.resize max abs diff {worst} (uint8 levels)")
    assert worst <= 1


@pytest.mark.parametrize("new_shape", [(640, 640), (480, 640), (320, 256), (1024, 1024)])
def test_letterbox_matches_reference_per_image(new_shape):
    worst = 0.0
    for img in photos(bgr=True):
        batch, rp = letterbox([img], new_shape)
        ref, r, (left, top) = ref_tensor(img, new_shape)
        assert tuple(batch.shape) == (1, 3, *new_shape)
        assert rp[0][0] == pytest.approx(r) and rp[0][1] == (left, top)
        worst = max(worst, float(np.abs(batch[0].numpy() - ref).max()))
    print(f"RESULT letterbox cpu {new_shape} vs reference max abs diff {worst * 255:.3f}/255")
    assert worst <= TOL


def test_letterbox_batch_of_different_sizes_and_rgb_input():
    imgs = photos(bgr=True)
    batch, rps = letterbox(imgs, (384, 512))
    assert batch.dtype == torch.float32 and tuple(batch.shape) == (len(imgs), 3, 384, 512)
    assert 0.0 <= float(batch.min()) and float(batch.max()) <= 1.0
    for i, img in enumerate(imgs):
        ref, r, pad = ref_tensor(img, (384, 512))
        assert np.abs(batch[i].numpy() - ref).max() <= TOL
        assert rps[i] == (pytest.approx(r), (float(pad[0]), float(pad[1])))
    rgb, _ = letterbox([np.ascontiguousarray(im[..., ::-1]) for im in imgs], (384, 512), bgr=False)
    assert torch.equal(rgb, batch)
    # the padding is grey 114 where the image is not: coffee (400x600) at 384x512 is 341x512, pad rows on top
    assert float(batch[1, :, 0, :].sub(114 / 255).abs().max()) < 1e-7


def test_letterbox_auto_pads_to_stride_multiple():
    imgs = photos(bgr=True)
    coffee = imgs[1]
    batch, rps = letterbox([coffee], 640, auto=True)
    ref, r, pad = ref_tensor(coffee, (640, 640), auto=True)
    assert tuple(batch.shape[2:]) == ref.shape[1:] == (448, 640)
    assert np.abs(batch[0].numpy() - ref).max() <= TOL and rps[0][1] == pad
    both, rps2 = letterbox([coffee, imgs[2]], 640, auto=True)  # 427x640 and 426x640 -> both in 448x640
    assert tuple(both.shape[2:]) == (448, 640)
    assert letterbox_plan(300, 451, 640, auto=True)[2] == (448, 640)


def test_letterbox_into_a_given_tensor():
    """`out=`: the batch written into a view of a larger fp16 buffer (an engine's bound input), the same values; its
    size comes from `letterbox_size`; a wrong shape is refused."""
    from netdef.tools.preprocess import letterbox_size, padded_size

    imgs = photos(bgr=True)[1:3]  # coffee 400x600 and chelsea 300x451
    want, rps = letterbox(imgs, 640, auto=True)
    hw = letterbox_size([im.shape for im in imgs], 640, auto=True)
    assert hw == tuple(want.shape[2:]) == (448, 640) and padded_size(hw, (480, 320), 32) == (480, 640)
    buf = torch.zeros(3, 3, 480, 640, dtype=torch.float16)
    got, rps2 = letterbox(imgs, 640, auto=True, out=buf[:2, :, :448, :640])
    assert got.data_ptr() == buf.data_ptr() and rps2 == rps
    assert float((buf[:2, :, :448].float() - want).abs().max()) <= 1e-3  # fp16 rounding
    assert float(buf[:2, :, 448:].abs().max()) == 0 and float(buf[2].abs().max()) == 0  # nothing else written
    with pytest.raises(NetdefError, match=r"out is \(2, 3, 480, 640\) torch.float16; this batch needs "
                                          r"\(2, 3, 448, 640\) floats"):
        letterbox(imgs, 640, auto=True, out=buf[:2])


def test_letterbox_no_upscale_and_errors():
    small = np.zeros((100, 50, 3), np.uint8)
    r, resized, padded = letterbox_plan(100, 50, 640, scaleup=False)
    assert r == 1.0 and resized == (100, 50) and padded == (640, 640)
    with pytest.raises(NetdefError, match="HxWx3 uint8"):
        letterbox([np.zeros((10, 10), np.uint8)])
    with pytest.raises(NetdefError, match="HxWx3 uint8"):
        letterbox([small.astype(np.float32)])
    with pytest.raises(NetdefError, match="no images"):
        letterbox([])


def test_scale_boxes_round_trip_and_clip():
    rng = np.random.default_rng(0)
    for (h, w), new_shape in (((400, 600), (640, 640)), ((300, 451), (480, 640)), ((1080, 810), (320, 256))):
        img = np.zeros((h, w, 3), np.uint8)
        _, [(r, (pw, ph))] = letterbox([img], new_shape)
        xy1 = rng.uniform(0, [w * 0.8, h * 0.8], (20, 2))
        boxes = np.concatenate([xy1, xy1 + rng.uniform(1, [w * 0.2, h * 0.2], (20, 2))], 1).astype(np.float32)
        on_input = boxes * r + np.array([pw, ph, pw, ph], np.float32)
        back = scale_boxes(torch.from_numpy(on_input), (r, (pw, ph)), (h, w))
        assert torch.allclose(back, torch.from_numpy(boxes), atol=1e-3)
        assert np.allclose(scale_boxes(on_input, (r, (pw, ph)), (h, w, 3)), boxes, atol=1e-3)
    out = scale_boxes(torch.tensor([[-5.0, -5.0, 700.0, 900.0]]), (1.0, (0.0, 0.0)), (400, 600))
    assert out.tolist() == [[0.0, 0.0, 600.0, 400.0]]
    # columns after the box (a score, a class) stay; integer boxes come back as floats; autograd tensors are read
    rows = scale_boxes(torch.tensor([[10.0, 20.0, 30.0, 40.0, 0.9, 3.0]]), (2.0, (4.0, 6.0)), (400, 600))
    assert rows.tolist() == [[3.0, 7.0, 13.0, 17.0, 0.8999999761581421, 3.0]]
    assert scale_boxes(torch.tensor([[10, 20, 30, 40]]), (2.0, (4.0, 6.0)), (400, 600)).tolist() == \
        [[3.0, 7.0, 13.0, 17.0]]
    grad = scale_boxes(torch.tensor([[10.0, 20.0, 30.0, 40.0]], requires_grad=True), (2.0, (4.0, 6.0)), (400, 600))
    assert grad.tolist() == [[3.0, 7.0, 13.0, 17.0]] and not grad.requires_grad
    half = torch.tensor([[10.5, 20.25, 1001.0, 41.0]], dtype=torch.float16)  # computed in float16 as before
    want = half.clone()
    want[:, 0::2] = ((half[:, 0::2] - 4.0) / 1.5).clamp(0, 600)
    want[:, 1::2] = ((half[:, 1::2] - 6.0) / 1.5).clamp(0, 400)
    assert torch.equal(scale_boxes(half, (1.5, (4.0, 6.0)), (400, 600)), want) and want[0, 2] == 600


@pytest.mark.gpu
def test_letterbox_cuda_matches_reference():
    imgs = photos(bgr=True)
    worst, cases, vs_cpu = 0.0, 0, 0.0
    for new_shape in ((640, 640), (384, 640), (320, 256)):
        gpu_in = [torch.from_numpy(im).cuda() for im in imgs]
        batch, rps = letterbox(gpu_in, new_shape)
        assert batch.is_cuda
        cpu_batch, cpu_rps = letterbox(imgs, new_shape)
        assert rps == cpu_rps
        for i, img in enumerate(imgs):
            ref, _, _ = ref_tensor(img, new_shape)
            worst = max(worst, float(np.abs(batch[i].cpu().numpy() - ref).max()))
            cases += 1
        vs_cpu = max(vs_cpu, float((batch.cpu() - cpu_batch).abs().max()))
    print(f"RESULT letterbox cuda vs reference: {cases} image/shape cases, max abs diff {worst * 255:.3f}/255; "
          f"cuda vs cpu letterbox max abs diff {vs_cpu:.2e}")
    assert worst <= TOL and vs_cpu <= 1e-6  # the same integers; /255 may differ in the last float bit


def test_wrong_inputs_are_named():
    """A PIL image (RGB) with bgr=True, a CUDA device PyTorch cannot see, boxes without 4 columns, and a list of
    ratio_pads where one is meant: each a NetdefError saying what to pass."""
    from PIL import Image

    pil = Image.fromarray(photos(bgr=False)[0])
    with pytest.raises(NetdefError, match=r"image 0 is a PIL image, whose channels are RGB: pass bgr=False"):
        letterbox([pil], 320)
    assert letterbox([pil], 320, bgr=False)[0].shape == (1, 3, 320, 320)
    if not torch.cuda.is_available():
        with pytest.raises(NetdefError, match=r"device cuda, but this PyTorch sees no CUDA GPU"):
            letterbox(photos(bgr=True)[:1], 320, device="cuda")
    with pytest.raises(NetdefError, match=r"expected boxes x1, y1, x2, y2 along the last axis, got shape \(2, 3\)"):
        scale_boxes(np.zeros((2, 3), np.float32), (1.0, (0.0, 0.0)), (100, 100))
    _, rps = letterbox(photos(bgr=True)[:2], 320)
    with pytest.raises(NetdefError, match=r"expected one image's \(ratio, \(pad_w, pad_h\)\), an entry of the list"):
        scale_boxes(np.zeros((2, 4), np.float32), rps, (100, 100))


def test_letterbox_kernel_needs_cuda_tensors():
    """The fused kernel writes CUDA batches only: on the CPU it says so (before compiling anything)."""
    with pytest.raises(NetdefError, match=r"the letterbox kernel writes CUDA tensors, and the batch is on cpu: "
                                          r"letterbox on a CUDA device \(device='cuda'"):
        letterbox(photos(bgr=True)[:1], 320, kernel=True)


@pytest.mark.gpu
def test_letterbox_kernel_equals_the_torch_letterbox():
    """netdef's fused CUDA letterbox writes the very bits the torch letterbox writes on the GPU: photos, an image
    of the target size (copied, not resized), a thin strip and a small one scaled up; square, rectangular and
    `auto` batches; BGR and RGB; a new float32 batch and a float16 view of a larger buffer (an engine's bound input
    under rect padding), nothing outside the view written."""
    rng = np.random.default_rng(0)
    imgs = [torch.from_numpy(im).cuda() for im in photos(bgr=True)]
    imgs += [torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8)).cuda()
             for shape in ((640, 640, 3), (37, 901, 3), (20, 30, 3))]
    cases = 0
    for new_shape, auto in (((640, 640), False), ((384, 640), False), ((320, 256), False), ((640, 640), True)):
        for bgr in (True, False):
            for chunk in (imgs[:4], imgs[4:], imgs[1:2]):
                want, rps = letterbox(chunk, new_shape, auto=auto, bgr=bgr)
                got, got_rps = letterbox(chunk, new_shape, auto=auto, bgr=bgr, kernel=True)
                assert got_rps == rps and got.dtype == want.dtype and torch.equal(got, want), (new_shape, auto, bgr)
                h, w = want.shape[2:]
                buf_a = torch.full((len(chunk) + 1, 3, h + 32, w + 32), -1.0, dtype=torch.float16, device="cuda")
                buf_b = buf_a.clone()
                letterbox(chunk, new_shape, auto=auto, bgr=bgr, out=buf_a[:len(chunk), :, :h, :w])
                letterbox(chunk, new_shape, auto=auto, bgr=bgr, out=buf_b[:len(chunk), :, :h, :w], kernel=True)
                assert torch.equal(buf_a, buf_b), (new_shape, auto, bgr, "float16 view")
                cases += 1
    print(f"RESULT letterbox kernel vs torch letterbox on the GPU: {cases} batches, float32 and float16, bit-equal")
