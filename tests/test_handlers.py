"""Module-type handlers: a user's handler for their own layer type is used by the channel graph."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from hwprune import handlers
from hwprune.errors import UnsupportedModelError
from hwprune.graph import ChannelGraph
from hwprune.handlers import ModuleHandler, handler_for, list_handlers, register_handler


class ChannelScale(nn.Module):
    """A per-channel scale with its own weight: the tracer cannot know its channels."""

    def __init__(self, c: int):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, c))

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.scale = ChannelScale(16)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.conv2(torch.relu(self.scale(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


class ChannelScaleHandler(ModuleHandler):
    tied = True
    calls = 0

    def prune_out_channels(self, module, idxs):
        type(self).calls += 1
        drop = set(int(i) for i in idxs)
        module.weight = nn.Parameter(module.weight.data[[i for i in range(module.weight.numel()) if i not in drop]])
        return module

    def out_channels(self, module):
        return module.weight.numel()


@pytest.fixture
def scale_handler():
    with pytest.warns(UserWarning, match="overwriting"):  # registered once, then replaced: warns
        register_handler(ChannelScale)(ModuleHandler())
        returned = register_handler(ChannelScale)(ChannelScaleHandler)
    assert returned is ChannelScaleHandler  # the decorator hands back what it decorates
    ChannelScaleHandler.calls = 0
    yield
    handlers._HANDLERS.pop(ChannelScale)


def test_layer_with_own_parameters_is_mapped_without_a_handler():
    """Without a handler the layer's weight is an unwrapped parameter the trace couples to
    conv1's group (Torch-Pruning's unwrapped parameters): it is cut with the group."""
    graph = ChannelGraph(Net(), torch.randn(1, 3, 16, 16))
    assert ("scale.weight", 1) in graph.group("conv1").free_params


class Detached(nn.Module):
    """A per-channel gain read through .detach(): invisible to the trace, yet as wide as conv1."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.gain = nn.Parameter(torch.ones(16))
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x):
        return self.conv2(self.conv1(x) * self.gain.detach().view(1, -1, 1, 1)).mean((2, 3))


def test_a_parameter_the_trace_cannot_map_is_refused_by_name():
    with pytest.raises(UnsupportedModelError, match="parameter 'gain' of module ''.*channel group 'conv1'"):
        ChannelGraph(Detached(), torch.randn(1, 3, 16, 16))


def test_user_handler_cuts_its_layer_with_the_group(scale_handler):
    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(2, 3, 16, 16)
    graph = ChannelGraph(model, x)
    (g,) = [g for g in graph.groups if "scale" in g.layers]
    assert g.name == "conv1" and g.prunable and g.width == 16
    keep = [0, 2, 3, 5, 8, 9, 12, 15]
    # the same network with the dropped channels zeroed at conv1 computes what the pruned one must
    ref = Net().eval()
    ref.load_state_dict(model.state_dict())
    drop = sorted(set(range(16)) - set(keep))
    with torch.no_grad():
        ref.conv1.weight[drop] = 0
        ref.conv1.bias[drop] = 0
        expected = ref(x)
    graph.prune_({"conv1": keep})
    assert ChannelScaleHandler.calls == 1
    assert model.scale.weight.shape == (8,) and model.conv2.in_channels == 8
    assert torch.equal(model.scale.weight.data, torch.linspace(0.5, 1.5, 16)[keep])
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_handlers_match_subclasses_and_are_listed(scale_handler):
    class Subclass(ChannelScale):
        pass

    assert isinstance(handler_for(Subclass(4)), ChannelScaleHandler)
    assert handler_for(nn.Conv2d(3, 3, 1)) is None
    names = list_handlers()
    assert f"{__name__}.ChannelScale" in names
    assert "torchvision.models.swin_transformer.ShiftedWindowAttention" in names
    with pytest.raises(TypeError):
        register_handler("ChannelScale")
