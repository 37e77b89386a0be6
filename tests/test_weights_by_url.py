"""Weights from anywhere detectron2 reads: MODEL.WEIGHTS, MODEL.CENTERX.BACKBONE_WEIGHTS
and teacher weights by local path, ``~``, ``file://`` and ``http://`` (a server on
127.0.0.1 started and stopped here), fetched once into detectron2's cache; an
unreachable URL gives one line naming the key and the URL."""

import functools
import http.server
import os
import threading

import pytest
import torch
import torchvision
from detectron2.modeling import build_model

from centerx.checkpoint import WeightsDownloadError, local_weights_path
from centerx.engine import load_weights_for_eval

from tiny_models import randomize_, tiny_cfg


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests = []
    statuses = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()

    def send_response(self, code, message=None):
        type(self).statuses.append(code)
        super().send_response(code, message)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """(folder served, base URL); detectron2's download cache in tmp_path/cache."""
    served = tmp_path / "served"
    served.mkdir()
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    _QuietHandler.requests = []
    _QuietHandler.statuses = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_model_weights_by_url_are_downloaded_once_into_the_cache(server, tmp_path):
    served, url = server
    source = randomize_(build_model(tiny_cfg("CenterNet")), seed=3)
    torch.save({"model": source.state_dict()}, served / "model.pth")
    for _ in range(2):
        model = build_model(tiny_cfg("CenterNet"))
        load_weights_for_eval(tiny_cfg("CenterNet"), model, f"{url}/model.pth")
        _assert_same_weights(model, source)
    # the second load only asks whether the file changed (304: not modified) and reads the cache
    assert _QuietHandler.requests == ["/model.pth", "/model.pth"] and _QuietHandler.statuses == [200, 304]
    assert str(tmp_path / "cache") in local_weights_path(f"{url}/model.pth")


def test_local_home_and_file_url_forms(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    source = randomize_(build_model(tiny_cfg("TTFNet")), seed=4)
    torch.save({"model": source.state_dict()}, tmp_path / "m.pth")
    for location in ("~/m.pth", f"file://{tmp_path}/m.pth", str(tmp_path / "m.pth")):
        model = build_model(tiny_cfg("TTFNet"))
        load_weights_for_eval(tiny_cfg("TTFNet"), model, location)
        _assert_same_weights(model, source)


def test_backbone_weights_by_url(server):
    served, url = server
    resnet = torchvision.models.resnet18(weights=None)
    torch.save(resnet.state_dict(), served / "r18.pth")
    model = build_model(tiny_cfg("CenterNet", "MODEL.CENTERX.BACKBONE_WEIGHTS", f"{url}/r18.pth"))
    torch.testing.assert_close(model.backbone.conv1.weight, resnet.conv1.weight)
    torch.testing.assert_close(model.backbone.layer4[1].bn2.running_var, resnet.layer4[1].bn2.running_var)


def test_teacher_weights_by_url(server, tmp_path):
    served, url = server
    teacher = randomize_(build_model(tiny_cfg("CenterNet")), seed=5)
    torch.save({"model": teacher.state_dict()}, served / "teacher.pth")
    teacher_cfg = tmp_path / "teacher.yaml"
    teacher_cfg.write_text(tiny_cfg("CenterNet").dump())
    cfg = tiny_cfg(
        "CenterNet",
        "MODEL.META_ARCHITECTURE",
        "Distiller",
        "MODEL.DISTILL.STUDENT_META_ARCHITECTURE",
        "CenterNet",
        "MODEL.DISTILL.TEACHERS",
        f"[('{teacher_cfg}', '{url}/teacher.pth', (0, 1, 2))]",
        "DATASETS.TRAIN",
        "()",
        "DATASETS.TEST",
        "()",
    )
    _assert_same_weights(build_model(cfg).teachers[0], teacher)


@pytest.mark.parametrize(
    "key,opts",
    [
        ("MODEL.WEIGHTS", ()),
        ("MODEL.CENTERX.BACKBONE_WEIGHTS", ("MODEL.CENTERX.BACKBONE_WEIGHTS", "{url}")),
    ],
)
def test_unreachable_url_names_the_key_and_the_url(key, opts, server):
    _, url = server
    dead = url.rsplit(":", 1)[0] + ":9/none.pth"  # discard port: nothing listens there
    opts = [o.format(url=dead) for o in opts]
    with pytest.raises(WeightsDownloadError) as info:
        if key == "MODEL.WEIGHTS":
            model = build_model(tiny_cfg("CenterNet"))
            load_weights_for_eval(tiny_cfg("CenterNet"), model, dead)
        else:
            build_model(tiny_cfg("CenterNet", *opts))
    message = str(info.value)
    assert message.startswith(f"{key}: cannot fetch '{dead}'") and "\n" not in message
    assert "local path" in message


def test_missing_file_and_missing_url_path(server):
    _, url = server
    with pytest.raises(FileNotFoundError, match="MODEL.WEIGHTS: weights file 'nowhere.pth' does not exist"):
        local_weights_path("nowhere.pth")
    with pytest.raises(WeightsDownloadError, match=r"\(HTTP 404: "):
        local_weights_path(f"{url}/absent.pth")
    assert not os.path.exists(os.path.join(os.environ["FVCORE_CACHE"], "absent.pth"))
