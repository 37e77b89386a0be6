import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    """Eight generated shapes images (64-96 px), registered as a user COCO json.

    Returns (dataset name, json file).
    """
    import centerx
    from centerx.data.datasets import generate_shapes

    root = str(tmp_path_factory.mktemp("shapes"))
    json_file = generate_shapes(root, "tiny", num_images=8, seed=7, min_size=64, max_size=96)
    name = "test_tiny_shapes"
    centerx.register_coco_json_datasets([(name, json_file, os.path.join(root, "tiny"))])
    return name, json_file
