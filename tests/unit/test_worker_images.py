"""How the worker turns A1111's base64 images into bytes, and the simulator's full-size images
that bench/worker_memory.py measures it with."""
from __future__ import annotations

import base64
import binascii
import io

import pytest
from PIL import Image

from chalicelib import jobrunner
from tests.a1111_sim import server as sim_server


def test_images_are_decoded_and_taken_out_of_the_response():
    pngs = [b"\x89PNG first", b"\x89PNG second"]
    response = {"images": [base64.b64encode(png).decode() for png in pngs], "info": "{}"}
    assert jobrunner._decode_images(response) == pngs
    assert response == {"info": "{}"}  # no base64 copy left behind for the rest of the job
    assert jobrunner._decode_images({"images": None}) == [] and jobrunner._decode_images({}) == []


@pytest.mark.parametrize("images", [["aGk"], ["aGk= "], ["data:image/png;base64,aGk="], ["é"], [None], "aGk="])
def test_anything_but_a_list_of_strict_base64_is_refused(images):
    with pytest.raises((binascii.Error, TypeError, ValueError)):
        jobrunner._decode_images({"images": images})


def test_noise_images_are_full_size_and_depend_only_on_seed_and_prompt():
    one = sim_server.render_png(256, 256, 7, "a cat", "infotext", noise=True)
    assert one == sim_server.render_png(256, 256, 7, "a cat", "infotext", noise=True)
    assert one != sim_server.render_png(256, 256, 8, "a cat", "infotext", noise=True)
    assert len(one) > 256 * 256 * 3  # incompressible: as large as the raw pixels
    assert Image.open(io.BytesIO(one)).size == (256, 256)
    assert len(sim_server.render_png(256, 256, 7, "a cat", "infotext")) < 10_000
