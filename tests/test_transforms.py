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


def test_augment_never_writes_its_inputs_and_mixes_augmented_with_untouched_samples():
    g = torch.Generator().manual_seed(3)
    image, label = torch.rand(6, 2, 32, 32, generator=g), (torch.rand(6, 1, 32, 32, generator=g) > 0.5).float()
    before = image.clone(), label.clone()
    cfg = AugmentConfig(hflip=0.5, vflip=0.5, rot90=0.5, affine=0.5, gamma=0.5, blur=0.5)
    out_img, out_lab = augment(image, label, cfg, g)
    assert torch.equal(image, before[0]) and torch.equal(label, before[1])
    changed = [not torch.equal(out_img[i], image[i]) for i in range(6)]
    assert any(changed)
    # hflip only, half the batch: the flipped samples are exact flips, the rest exact copies.
    out_img, out_lab = augment(image, label, AugmentConfig(hflip=0.5, vflip=0, rot90=0, affine=0, gamma=0, blur=0), g)
    for i in range(6):
        flipped = torch.equal(out_img[i], image[i].flip(-1))
        assert flipped or torch.equal(out_img[i], image[i])
        assert torch.equal(out_lab[i], label[i].flip(-1) if flipped else label[i])


def test_fast_blur_and_gamma_match_their_reference_definitions():
    import torch.nn.functional as F

    from cropseg.data.transforms import _box_blur3, _gamma

    x = torch.rand(3, 4, 20, 24, generator=torch.Generator().manual_seed(0))
    ref = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    assert torch.allclose(_box_blur3(x), ref, atol=1e-6)
    gam = torch.tensor([0.7, 1.0, 1.5])
    assert torch.allclose(_gamma(x, gam), x.pow(gam.view(-1, 1, 1, 1)), atol=1e-6)


def test_gathered_batches_augment_exactly_as_per_sample_views():
    """The GPU's way (index gathers/scatters of the selected samples) is checked here on the CPU:
    same draws, same results as the CPU's per-sample loop, inputs untouched."""
    g = torch.Generator().manual_seed(4)
    image, label = torch.rand(7, 3, 40, 40, generator=g), (torch.rand(7, 1, 40, 40, generator=g) > 0.5).float()
    before = image.clone(), label.clone()
    cfg = AugmentConfig(hflip=0.5, vflip=0.5, rot90=0.5, affine=0.5, gamma=0.5, blur=0.5)
    views = augment(image, label, cfg, torch.Generator().manual_seed(9), gather=False)
    gathered = augment(image, label, cfg, torch.Generator().manual_seed(9), gather=True)
    assert torch.allclose(views[0], gathered[0], atol=1e-6) and torch.equal(views[1], gathered[1])
    assert not torch.equal(views[0], image) and (views[1] == IGNORE).any()  # something was applied
    assert torch.equal(image, before[0]) and torch.equal(label, before[1])
