"""Starting DD3G's student from the multi-view teacher: each copied part computes what the teacher's does."""

import json

import pytest
import torch

from distill3d.cli import main
from distill3d.diffusion.multiview_attention import set_multiview_attention
from distill3d.errors import UserError
from distill3d.methods.dd3g.collect import CollectConfig, collect_quadruples
from distill3d.methods.dd3g.student import PEPDConfig, PEPDStudent
from distill3d.methods.dd3g.teacher_init import init_from_teacher, teacher_shaped_student
from distill3d.methods.dd3g.train import tiny_student
from distill3d.world_models.teachers import WorldMultiViewTeacher


@pytest.fixture(scope="module")
def pair():
    teacher = WorldMultiViewTeacher.from_pretrained("world-multiview", device="cpu")
    student = PEPDStudent(teacher_shaped_student(PEPDConfig(), teacher.config.net)).eval()
    init_from_teacher(student, teacher.net, teacher.schedule.num_train_timesteps - 1)
    return teacher, student


def test_resblocks_fold_the_teachers_time_embedding_at_the_first_step(pair):
    teacher, student = pair
    unet = teacher.net.unet
    temb = unet.time_embedding(unet.time_proj(torch.tensor([999])))
    pairs = [(student.pattern_extraction.down[0], unet.down_blocks[1].resnets[0], 64),
             (student.pattern_extraction.down[2], unet.mid_block.resnets[0], 128),
             (student.pattern_extraction.res_blocks[0], unet.mid_block.resnets[1], 128)]
    x_gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for ours, theirs, channels in pairs:
            x = torch.randn(2, channels, 8, 8, generator=x_gen)
            want = theirs(x, temb.expand(2, -1))
            got = ours(x, None)
            if got.shape[-1] != want.shape[-1]:  # the student's down blocks pool inside; compare without it
                pool, ours.downsample = ours.downsample, None
                got = ours(x, None)
                ours.downsample = pool
            # GroupNorm eps: 1e-5 in the teacher's U-Net, 1e-6 in the student's blocks
            assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_conv_in_transformer_and_image_tokens_match_the_teacher(pair):
    teacher, student = pair
    net, pattern = teacher.net, student.pattern_extraction
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        noise, rays = torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 6, 16, 16, generator=g)
        teacher_view = torch.cat([noise, torch.zeros(2, 3, 16, 16), rays], dim=1)  # no input image
        assert torch.allclose(pattern.conv_in(torch.cat([noise, rays], 1)), net.unet.conv_in(teacher_view), atol=1e-5)

        images = torch.rand(2, 64, 64, 3, generator=g)
        want = net.image_tokens(images.permute(0, 3, 1, 2) * 2 - 1, torch.zeros(2, 6, 64, 64))  # rays left out
        tokens = student.image_encoder(images)
        assert torch.allclose(tokens, want, atol=1e-5)

        views = 4
        x = torch.randn(2 * views, 128, 8, 8, generator=g)
        set_multiview_attention(net.unet, views)  # the teacher's 3D self-attention over these 4 views
        want = net.unet.mid_block.attentions[0](x, encoder_hidden_states=tokens.repeat_interleave(views, 0)).sample
        set_multiview_attention(net.unet, net.config.num_views + 1)
        got = pattern.transformers[0](x, tokens, views)
        assert torch.allclose(got, want, atol=1e-4)


def test_a_student_of_another_shape_is_refused():
    teacher = WorldMultiViewTeacher.from_pretrained("world-multiview", device="cpu")
    with pytest.raises(UserError, match="teacher_shaped_student"):
        init_from_teacher(PEPDStudent(tiny_student()), teacher.net, 999)


def test_training_starts_from_the_teacher(tmp_path):
    data = tmp_path / "q"
    collect_quadruples(CollectConfig(count=1, shard_size=1, batch_size=1, ddim_steps=1, device="cpu"), data,
                       progress=False)
    out = tmp_path / "run"
    assert main(["dd3g", "train", "--data", str(data), "--out", str(out), "--pattern-from-teacher", "--steps", "1",
                 "--batch-size", "1", "--device", "cpu", "--set", "objective.implicit_verification=false"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["pattern_from_teacher"] and config["student"]["pattern"]["channels"] == [64, 128, 128, 128]
    assert config["student"]["pattern"]["activation"] == "geglu"
