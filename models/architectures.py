"""AlexNet and VGG-16 for 32×32 CIFAR-10 images, built only from layers the emulator supports.

Supported layers: Conv2d, Linear, ReLU, MaxPool2d, BatchNorm2d (folded into the preceding
convolution at export), Dropout (dropped at export) and Flatten.
"""

from __future__ import annotations

from torch import nn

from accel_sim.errors import AccelSimError

NUM_CLASSES = 10

# VGG-16 "D" configuration: output channels of the 13 conv layers, "M" = 2×2 max-pool.
VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16(num_classes: int = NUM_CLASSES) -> nn.Sequential:
    """VGG-16 with BatchNorm: 13 3×3 conv layers and 3 fully connected layers (15.2 M parameters).

    After the fifth pooling a 32×32 input is 512×1×1, so the classifier is 512-512-512-classes.
    """
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_PLAN:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [
                nn.Conv2d(channels, item, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(item),
                nn.ReLU(inplace=True),
            ]
            channels = item
    layers += [
        nn.Flatten(),
        nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(512, num_classes),
    ]
    return _init_weights(nn.Sequential(*layers))


def alexnet(num_classes: int = NUM_CLASSES) -> nn.Sequential:
    """AlexNet for CIFAR-10: 5 conv + 3 fully connected layers, ReLU, max-pooling (7.7 M parameters).

    The kernel sizes and widths follow the usual CIFAR-scale reduction of AlexNet (5×5, 5×5, then
    three 3×3 convolutions; 64-192-384-256-256 channels) with a 1024-1024 classifier.
    """
    return _init_weights(nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(256 * 4 * 4, 1024), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(1024, 1024), nn.ReLU(inplace=True),
        nn.Linear(1024, num_classes),
    ))


def _init_weights(model: nn.Sequential) -> nn.Sequential:
    """He-normal weights and zero biases, so the signal neither dies nor explodes without BatchNorm."""
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for m in weighted:
        nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    nn.init.normal_(weighted[-1].weight, std=0.01)  # small initial logits: loss starts near ln(10)
    return model


ARCHITECTURES = {"alexnet": alexnet, "vgg16": vgg16}


def build_model(name: str) -> nn.Sequential:
    """A freshly initialised network by name (``alexnet`` or ``vgg16``)."""
    try:
        factory = ARCHITECTURES[name]
    except KeyError:
        raise AccelSimError(
            f"unknown model {name!r}; choose one of {', '.join(sorted(ARCHITECTURES))}"
        ) from None
    return factory()
