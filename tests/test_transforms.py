import torch

from cropseg.data.transforms import IGNORE, AugmentConfig, augment, random_crop


def test_geometric_augmentation_keeps_label_aligned_with_image():
    g = torch.Generator().manual_seed(0)
    label = (torch.rand(8, 1, 48, 48, generator=g) > 0.5).float()
    image = torch.cat([label, 1 - label, torch.rand(8, 1, 48, 48, generator=g)], 1)
    cfg = AugmentConfig(hflip=0.5, vflip=0.5, rot90=0.5, affine=1.0, gamma=0.0, blur=0.0, scale_range=(1.0, 1.0),
                        max_rotation=0.0)
    # With the affine a pure identity resampling, every geometric op must move image and label together.
    out_img, out_lab = augment(image, label, cfg, g)
    valid = out_lab != IGNORE
    assert torch.allclose(out_img[:, :1][valid], out_lab[valid], atol=1e-4)
    cfg = AugmentConfig(hflip=1.0, vflip=0.0, rot90=0.0, affine=0.0, gamma=0.0, blur=0.0)
    img2, lab2 = augment(image, label, cfg, g)
    assert torch.equal(lab2, label.flip(-1)) and torch.equal(img2, image.flip(-1))


def test_rotation_marks_pixels_from_outside_as_ignored_and_labels_stay_binary():
    g = torch.Generator().manual_seed(1)
    label = (torch.rand(4, 1, 64, 64, generator=g) > 0.5).float()
    cfg = AugmentConfig(hflip=0, vflip=0, rot90=0, affine=1.0, max_rotation=20, scale_range=(0.8, 0.8), gamma=1.0, blur=1.0)
    img, lab = augment(torch.rand(4, 3, 64, 64, generator=g), label, cfg, g)
    assert set(lab.unique().tolist()) <= {0.0, 1.0, IGNORE}
    assert (lab == IGNORE).any()  # zoomed out: corners come from outside the patch
    assert img.isfinite().all()


def test_random_crop_same_window():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 10 * 10.0).reshape(2, 10, 10)
    y = x[:1].clone()
    cx, cy = random_crop(x, y, 4, g)
    assert cx.shape == (2, 4, 4) and torch.equal(cx[:1], cy)
