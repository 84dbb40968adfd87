"""GraphedForward: the same results as the eager call, one recording per input signature."""

import pytest
import torch

from distill3d.diffusion.cuda_graph import GraphedForward
from distill3d.world_models.networks import WorldTextToImageNet
from distill3d.world_models.teachers import WorldTextToImageTeacher
from distill3d.world_models.text_to_image_training import tiny_config

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_cpu_inputs_run_eagerly_without_recording():
    calls = []

    def fn(x):
        calls.append(1)
        return x * 2

    graphed = GraphedForward(fn)
    x = torch.arange(4.0)
    assert torch.equal(graphed(x), x * 2)
    assert len(calls) == 1 and graphed.recordings == {}


@cuda
def test_replay_matches_eager_and_survives_later_calls():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)).cuda().eval()
    graphed = GraphedForward(net)
    with torch.no_grad():
        a, b = torch.randn(5, 16, device="cuda"), torch.randn(5, 16, device="cuda")
        out_a = graphed(a)
        out_b = graphed(b)  # replays the recording of a's signature
        assert len(graphed.recordings) == 1
        torch.testing.assert_close(out_a, net(a))  # not overwritten by the second call
        torch.testing.assert_close(out_b, net(b))
        graphed(torch.randn(7, 16, device="cuda"))
        assert len(graphed.recordings) == 2


@cuda
def test_graphed_teacher_denoises_like_the_eager_one():
    config = tiny_config()
    net = WorldTextToImageNet(config.net)
    eager = WorldTextToImageTeacher(net, config, device="cuda", cuda_graphs=False)
    graphed = WorldTextToImageTeacher(net, config, device="cuda", cuda_graphs=True)
    R = config.net.resolution
    cond = eager.encode_prompt(["a red striped torus, front view"] * 3)
    for seed in range(3):
        g = torch.Generator(device="cuda").manual_seed(seed)
        x = torch.randn(3, 3, R, R, device="cuda", generator=g)
        t = torch.randint(0, 1000, (3,), device="cuda", generator=g)
        want, got = eager.denoise(x, t, cond, 4.0), graphed.denoise(x, t, cond, 4.0)
        torch.testing.assert_close(got.x0, want.x0, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got.eps, want.eps, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_replay_on_a_gpu_other_than_the_current_one():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)).to("cuda:1").eval()
    graphed = GraphedForward(net)
    assert torch.cuda.current_device() == 0
    with torch.no_grad():
        for seed in range(2):
            x = torch.randn(5, 16, device="cuda:1", generator=torch.Generator("cuda:1").manual_seed(seed))
            out = graphed(x)
            assert out.device == x.device
            torch.testing.assert_close(out, net(x))
