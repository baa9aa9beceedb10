"""The app served over real HTTP, driven with gradio_client."""

import pytest

from hsl_demo.catalog import Catalog
from hsl_demo.search import Retriever
from hsl_demo.ui import build_demo


@pytest.fixture(scope="module")
def served(demo_backbone):
    retriever = Retriever(demo_backbone, Catalog.open("products"))
    demo = build_demo(retriever)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True,
                        allowed_paths=[str(retriever.catalog.image_dir())])
    yield demo
    demo.close()


def test_describe_endpoint_returns_ranked_products(served):
    from gradio_client import Client

    client = Client(served.local_url, verbose=False)
    gallery = client.predict("green dotted scarf", 5, api_name="/describe")
    assert len(gallery) == 5
    captions = [item["caption"] for item in gallery]
    assert captions[0].startswith("#1 Green dotted")
    assert sum("Green dotted scarf" in c for c in captions[:3]) == 2
    assert [c.split()[0] for c in captions] == ["#1", "#2", "#3", "#4", "#5"]


def test_empty_description_is_an_error_message_not_a_crash(served):
    from gradio_client import Client

    client = Client(served.local_url, verbose=False)
    with pytest.raises(Exception, match="empty query"):
        client.predict("   ", 5, api_name="/describe")
    assert len(client.predict("red cap", 3, api_name="/describe")) == 3  # still serving
