"""The Gradio app, launched in-process and called through gradio_client."""

import json
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app_process import as_client
from photos import ASTRONAUT, BAD_FILES, CAMERA, five_faces

pytestmark = pytest.mark.slow  # the whole app, launched once for the module (about 10 s)


@pytest.fixture(scope="module")
def client(server):
    return Client(server, verbose=False)


def test_api_matches_python_api(client, app_module, tmp_path):
    for photo in (ASTRONAUT, five_faces(tmp_path / "five.png"), CAMERA):
        annotated, crops, result, status = client.predict(handle_file(str(photo)), api_name="/predict")
        expected = app_module.PIPELINE(photo)
        assert result["image"] == expected["image"]
        assert len(result["faces"]) == len(expected["faces"]) == len(crops)
        for got, want in zip(result["faces"], expected["faces"]):
            assert got["box"] == want["box"]
            np.testing.assert_allclose(got["keypoints"], want["keypoints"], atol=0.011)
        assert annotated.endswith(".jpg")
        if expected["faces"]:
            assert f"Found {len(expected['faces'])} face" in status
        else:
            assert "No face found" in status


def test_bad_inputs_get_messages_and_the_app_keeps_serving(client, tmp_path):
    for name, (make, message) in BAD_FILES.items():
        with pytest.raises(AppError, match=message):
            client.predict(handle_file(str(make(tmp_path / name))), api_name="/predict")
    with pytest.raises(AppError, match="No photo"):
        client.predict(None, api_name="/predict")
    _, _, result, _ = client.predict(handle_file(str(ASTRONAUT)), api_name="/predict")
    assert len(result["faces"]) == 1


def test_twenty_concurrent_calls_all_succeed(server, tmp_path):
    photo = str(five_faces(tmp_path / "five.png"))

    def call(index: int) -> int:  # twenty clients: one client may hold only a few places
        client = Client(server, verbose=False, headers=as_client(f"198.51.100.{index}"))
        return len(client.predict(handle_file(photo), api_name="/predict")[2]["faces"])

    with ThreadPoolExecutor(max_workers=20) as pool:
        counts = list(pool.map(call, range(20)))
    assert counts == [5] * 20


def test_photo_outputs_carry_pose_axes_captions_and_aligned_faces(app_module):
    from jaxkp.inference import read_photo

    _, crops, result, _, files = app_module.annotated_outputs(read_photo(ASTRONAUT))
    (face,) = result["faces"]
    assert set(face["pose"]) == {"yaw", "pitch", "roll"}
    assert crops[0][1].startswith("face 1, score") and "yaw" in crops[0][1]
    gallery, archive = app_module.show_aligned(files)
    assert len(gallery) == 1 and Image.open(gallery[0][0]).size == (app_module.ALIGNED_SIZE,) * 2
    with zipfile.ZipFile(archive) as packed:
        assert sorted(packed.namelist()) == ["aligned.json", "face_0.png"]
        assert "ffhq" in json.dumps(json.loads(packed.read("aligned.json")))
    _, _, empty, _, nothing = app_module.annotated_outputs(read_photo(CAMERA))
    assert not empty["faces"] and app_module.show_aligned(nothing) == ([], None)
