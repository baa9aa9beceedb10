"""The app served over real HTTP, driven with gradio_client."""

import pytest

from hsl_demo.catalog import Catalog
from hsl_demo.search import Retriever, load_heads
from hsl_demo.ui import build_demo


@pytest.fixture(scope="module")
def served(demo_backbone):
    retriever = Retriever(demo_backbone, Catalog.open("products"), hsl=load_heads(demo_backbone)["hsl"])
    demo = build_demo(retriever)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                        allowed_paths=[str(retriever.catalog.image_dir())])
    yield demo
    demo.close()


def test_describe_endpoint_returns_ranked_products(served):
    from gradio_client import Client

    client = Client(served.local_url, verbose=False)
    gallery, why = client.predict("green dotted scarf", 5, api_name="/describe")
    assert len(gallery) == 5
    # the breakdown table: one row per result, the final score and each level's terms
    assert why["headers"][:4] == ["rank", "title", "final", "global"]
    assert {"level1 object", "level2 image"} <= set(why["headers"])
    assert [row[0] for row in why["data"]] == [1, 2, 3, 4, 5]
    assert " × " in why["data"][0][why["headers"].index("level2 object")]
    captions = [item["caption"] for item in gallery]
    assert captions[0].startswith("#1 Green dotted")
    assert sum("Green dotted scarf" in c for c in captions[:3]) == 2
    assert [c.split()[0] for c in captions] == ["#1", "#2", "#3", "#4", "#5"]


def test_empty_description_is_an_error_message_not_a_crash(served):
    from gradio_client import Client

    client = Client(served.local_url, verbose=False)
    with pytest.raises(Exception, match="empty query"):
        client.predict("   ", 5, api_name="/describe")
    assert len(client.predict("red cap", 3, api_name="/describe")[0]) == 3  # still serving
