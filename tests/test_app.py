"""The app served over real HTTP, driven with gradio_client: every tab's endpoint, per-session
state, and bad input that ends in a message while the app keeps serving."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, assert_clean_error, run_cli

from hsl_demo import charts
from hsl_demo.modes.describe import tab as describe_tab
from hsl_demo.modes.drill_down import tab as drill_tab
from hsl_demo.modes.modify import tab as modify_tab
from hsl_demo.thumbnails import Thumbnails
from hsl_demo.ui import AppModels, link_search
from hsl_demo.widgets import ChartRenderer, TabContext, TabParts, link_k


def select(index: int):
    import gradio as gr

    return gr.SelectData(None, {"index": index, "value": None})


def column(chart, name: str) -> list:
    """A native chart's column `name`, row by row (its rows, or an update with its title)."""
    if hasattr(chart, "columns"):
        return chart[name].tolist()
    return [row[chart.value["columns"].index(name)] for row in chart.value["data"]]


@pytest.fixture(scope="module")
def served(served_demo):
    return served_demo


def client_of(served):
    from gradio_client import Client

    return Client(served[0].local_url, verbose=False)


def call(client, *args, api_name: str):
    """(outputs, warnings shown to the user) of one call."""
    job = client.submit(*args, api_name=api_name)
    result = job.result(timeout=120)
    logs = []
    while not job.communicator.updates.empty():
        update = job.communicator.updates.get_nowait()
        if getattr(update, "log", None) and update.log[1] == "warning":
            logs.append(update.log[0])
    return result, logs


def captions(gallery) -> list[str]:
    return [item["caption"] for item in gallery]


def ranks(gallery) -> list[str]:
    return [c.split()[0] for c in captions(gallery)]


def assert_serving(client):
    gallery = client.predict("red cap", 3, api_name="/describe")[0]
    assert ranks(gallery) == ["#1", "#2", "#3"]


def test_describe_endpoint_returns_ranked_products(served):
    client = client_of(served)
    gallery, chart, why, link = client.predict("green dotted scarf", 5, api_name="/describe")
    assert ranks(gallery) == ["#1", "#2", "#3", "#4", "#5"]
    assert captions(gallery)[0].startswith("#1 Green dotted")
    assert sum("Green dotted scarf" in c for c in captions(gallery)[:3]) == 2
    assert " · 0." in captions(gallery)[0]  # "#rank title · score"
    # the chart goes as rows for the browser to draw: one stacked bar segment per result and term
    plot = chart  # the plot's rows alone: its look is fixed when the page is built
    assert plot["mark"] == "bar" and plot["columns"][:3] == ["result", "term", "contribution"]
    rows = [dict(zip(plot["columns"], row)) for row in plot["data"]]
    assert {r["result"] for r in rows} == {"#1", "#2", "#3", "#4", "#5"}
    first = [r for r in rows if r["result"] == "#1"]
    assert sum(r["contribution"] for r in first) == pytest.approx(first[0]["final"], abs=1e-3)  # segments add up
    assert link.endswith("/?q=green+dotted+scarf&k=5")
    # the breakdown table: one row per result, the final score and each level's terms
    assert why["headers"][:4] == ["rank", "title", "final", "global"]
    assert {"level1 object", "level2 image"} <= set(why["headers"])
    assert [row[0] for row in why["data"]] == [1, 2, 3, 4, 5]
    assert " × " in why["data"][0][why["headers"].index("level2 object")]


def test_empty_description_is_an_error_message_not_a_crash(served):
    client = client_of(served)
    with pytest.raises(Exception, match="empty query"):
        client.predict("   ", 5, api_name="/describe")
    assert_serving(client)


def test_modify_a_catalog_reference(served):
    client = client_of(served)
    gallery, chart, link = client.predict(None, "p00024", "make it blue and striped", 6, api_name="/modify")
    assert ranks(gallery) == ["#1", "#2", "#3", "#4", "#5", "#6"]
    assert all("Blue striped" in c for c in captions(gallery)[:3]), captions(gallery)
    assert chart["value"]["mark"] == "point" and len(chart["value"]["data"]) == 6
    assert "query weights: image 0." in chart["label"]
    assert link.endswith("/?ref=p00024&mod=make+it+blue+and+striped&k=6")


def test_modify_an_uploaded_photo(served, tmp_path):
    from gradio_client import handle_file

    products = served[1]
    photo = tmp_path / "my tee.jpg"
    shutil.copy(products.catalog.image_path(products.catalog.row("p00024")), photo)
    client = client_of(served)
    gallery, _, link = client.predict(handle_file(str(photo)), "", "make it blue and striped", 5, api_name="/modify")
    assert "no link" in link  # an upload is not in the catalog, so a link cannot name it
    assert ranks(gallery) == ["#1", "#2", "#3", "#4", "#5"]
    assert all("Blue striped" in c for c in captions(gallery)[:3]), captions(gallery)


def test_modify_without_text_warns_and_searches_by_the_image(served):
    client = client_of(served)
    (gallery, _, _), logs = call(client, None, "p00024", "  ", 5, api_name="/modify")
    assert any("reference image alone" in m for m in logs), logs
    assert captions(gallery)[0].startswith("#1 Red t-shirt"), captions(gallery)
    assert all(c.split(maxsplit=1)[1].startswith("Red ") for c in captions(gallery)[:4]), captions(gallery)


@pytest.mark.parametrize("name, content, message", [
    ("notes.txt", b"not a photo at all", "notes.txt: not an image"),
    ("photo.jpg", None, "photo.jpg: corrupt or truncated image"),
])
def test_bad_uploads_are_one_line_messages(served, tmp_path, name, content, message):
    from gradio_client import handle_file

    if content is None:  # a JPEG cut in half: the header reads, the pixels do not
        products = served[1]
        data = products.catalog.image_path(0).read_bytes()
        content = data[:len(data) // 2]
    bad = tmp_path / name
    bad.write_bytes(content)
    client = client_of(served)
    with pytest.raises(Exception, match=message) as info:
        client.predict(handle_file(str(bad)), "", "make it blue", 5, api_name="/modify")
    assert "Traceback" not in str(info.value) and "/tmp" not in str(info.value)
    assert_serving(client)


@pytest.mark.parametrize("image, ref_id, message", [
    (None, "", "no reference"),
    (None, "p99999", "no product 'p99999'"),
    (None, "/etc/passwd", "no product"),  # an id is never read as a server path
])
def test_bad_references_are_messages(served, image, ref_id, message):
    client = client_of(served)
    with pytest.raises(Exception, match=message):
        client.predict(image, ref_id, "make it blue", 5, api_name="/modify")
    assert_serving(client)


def test_drill_down_rounds_accumulate_within_a_session(served):
    client = client_of(served)
    gallery, rounds, scores, moves, link = client.predict("a red handbag", api_name="/drill_add")
    assert ranks(gallery)[:3] == ["#1", "#2", "#3"] and "1. a red handbag" in rounds
    gallery, rounds, scores, moves, link = client.predict("white sneakers", api_name="/drill_add")
    assert "1. a red handbag" in rounds and "2. white sneakers" in rounds and "(2 of at most" in rounds
    assert captions(gallery)[0].startswith("#1 Look")
    assert scores["mark"] == "bar" and moves["mark"] == "point"  # points: a first round shows
    moved = [dict(zip(moves["columns"], row)) for row in moves["data"]]
    assert {m["round"] for m in moved} == {"round 1", "round 2"}
    assert {m["query"] for m in moved if m["round"] == "round 2"} == {"white sneakers"}
    assert {m["rank"] for m in moved if m["round"] == "round 2"} >= {"  1", "  2"}  # labels that sort as ranks
    assert link.endswith("/?rounds=a+red+handbag%7Cwhite+sneakers")
    # undo drops the last round, reset all of them
    _, rounds, _, _, link = client.predict(api_name="/drill_undo")
    assert "1. a red handbag" in rounds and "white sneakers" not in rounds and link.endswith("=a+red+handbag")
    gallery, rounds, scores, moves, link = client.predict(api_name="/drill_reset")
    assert gallery == [] and "No rounds yet" in rounds and link == ""
    assert scores["data"] == [] and moves["data"] == []  # empty plots, not none: no page error in the browser


def test_drill_down_sessions_are_isolated(served):
    alice, bob = client_of(served), client_of(served)
    alice.predict("a red handbag", api_name="/drill_add")
    _, bob_rounds, *_ = bob.predict("white sneakers", api_name="/drill_add")
    _, alice_rounds, *_ = alice.predict("a checked scarf", api_name="/drill_add")
    assert "1. white sneakers" in bob_rounds and "handbag" not in bob_rounds and "(1 of" in bob_rounds
    assert "1. a red handbag" in alice_rounds and "2. a checked scarf" in alice_rounds
    assert "sneakers" not in alice_rounds


@pytest.mark.slow
def test_drill_down_bad_input_warns_or_errors_and_keeps_the_rounds(served):
    client = client_of(served)
    (_, rounds, *_), logs = call(client, api_name="/drill_undo")
    assert logs == ["no round to undo"] and "No rounds yet" in rounds
    (_, rounds, *_), logs = call(client, "   ", api_name="/drill_add")
    assert any("empty region query" in m for m in logs) and "No rounds yet" in rounds
    client.predict("a red handbag", api_name="/drill_add")
    (_, rounds, *_), logs = call(client, "A red  handbag", api_name="/drill_add")
    assert any("already asked in round 1" in m for m in logs) and "(1 of" in rounds
    # a round in words the model never saw is kept, marked in the list, with Undo one click away
    (_, rounds, *_), logs = call(client, "a velvet tuxedo", api_name="/drill_add")
    assert any("never trained on" in m for m in logs), logs
    assert "2. a velvet tuxedo" in rounds and "words the model does not know* (Undo drops it)" in rounds, rounds
    assert "1. a red handbag — best" in rounds and rounds.count("does not know") == 1
    client.predict(api_name="/drill_undo")
    queries = ["white sneakers", "a checked scarf", "a blue coat", "black jeans", "a green cap", "a yellow dress",
               "a pink purse", "grey socks", "an orange umbrella"]
    for q in queries:  # up to the maximum of 10 rounds
        _, rounds, *_ = client.predict(q, api_name="/drill_add")
    assert "(10 of at most 10)" in rounds
    with pytest.raises(Exception, match="at most 10 rounds"):
        client.predict("a purple kimono", api_name="/drill_add")
    _, rounds, *_ = client.predict(api_name="/drill_undo")  # the session survived the refusal
    assert "(9 of at most 10)" in rounds
    assert_serving(client)


def tab_handlers(products, looks, chart_mode: str = "native"):
    """The three tabs' handlers over loaded retrievers (what the page builds, without a page)."""
    thumbnails, renderer = Thumbnails(), ChartRenderer(chart_mode)

    def context(retriever):
        return TabContext(retriever.catalog, lambda: retriever, thumbnails, renderer)
    return (describe_tab.DescribeTab(context(products)), modify_tab.ModifyTab(context(products)),
            drill_tab.DrillDownTab(context(looks)))


def test_clicks_pick_a_reference_and_highlight_a_result(served):
    """The gallery select handlers (browser-only events, so called directly here)."""
    _, products, looks = served
    describe, modify, drill = tab_handlers(products, looks)
    thumbnails = modify.context.thumbnails
    assert modify.picks[0] == "p00024" and len(modify.picks) == 12 and len(set(modify.picks)) == 12
    ref_id, photo = modify.pick(select(0))
    catalog = products.catalog
    assert ref_id == "p00024" and photo == thumbnails.of(catalog.image_path(catalog.row("p00024")))
    assert Path(photo).parent == thumbnails.folder  # a thumbnail, never the catalog's own file
    _, _, results, *_ = modify.modify(None, "p00024", "make it blue and striped", 5)
    # clicking result #2 makes it the reference: the next search starts from its id
    ref_id, photo, chart, picked = modify.use_result(results, select(1))
    assert ref_id == results[1].id and photo == thumbnails.of(results[1].image)
    value = chart.value  # the rows, with the query's weights in the title
    assert [row[value["columns"].index("result")] for row in value["data"]][1] == "▶ #2"  # highlighted
    assert modify.modify(None, ref_id, "make it red", 5)[2][0].id != ref_id  # the reference itself is never a result
    # the picker shows the new reference picked when it is one of its products, else none
    assert picked.selected_index == (modify.picks.index(ref_id) if ref_id in modify.picks else None)
    _, _, _, found, *_ = describe.describe("green dotted scarf", 12)
    chart = describe.describe_select(found, select(10))  # below the charted top: added to the chart, highlighted
    assert column(chart, "result")[-1] == "▶ #11" and "▶ #11" in charts.RESULT_ORDER
    *_, session, _ = drill.drill_add("a red handbag", None)
    scores, moves = drill.drill_select(session, select(0))
    assert column(scores, "result")[0] == "▶ #1" and "▶ #1" in set(column(moves, "result"))


def test_png_charts_are_the_matplotlib_figures(served):
    """--charts png: the charts the app drew before, kept to measure what they cost."""
    from matplotlib.figure import Figure

    _, products, looks = served
    describe, _, drill = tab_handlers(products, looks, "png")
    _, chart, *_ = describe.describe("green dotted scarf", 5)
    assert isinstance(chart, Figure)
    *_, session, _ = drill.drill_add("a red handbag", None)
    assert all(isinstance(c, Figure) for c in drill.charts(session))
    with pytest.raises(ValueError, match="unknown chart mode"):
        ChartRenderer("svg")


def test_results_show_the_region_that_matched(served):
    """Describe marks the argmax region of the HSL object term on each result (a cell of the
    4x4 grid of a product photo), Drill down the region each query attended to (a look's box),
    labelled with the query; the gallery serves them as marked thumbnails."""
    from PIL import Image

    _, products, looks = served
    describe, _, _ = tab_handlers(products, looks)
    gallery, _, _, found, *_ = describe.describe("green dotted scarf", 4)
    assert all(len(r.marks) == 1 and r.marks[0].cell is not None and r.marks[0].cell[2] == 4 for r in found)
    with Image.open(gallery[0][0]) as marked, Image.open(describe.context.thumbnails.of(found[0].image)) as plain:
        assert marked.size == plain.size and marked.tobytes() != plain.tobytes()
    session = looks.session(3)
    session.add("a red handbag")
    session.add("white sneakers")
    for result in session.current.results:
        assert [m.label for m in result.marks] == ["1. a red handbag", "2. white sneakers"]
        row = looks.catalog.row(result.id)
        boxes = [tuple(map(float, part["box"])) for part in looks.catalog.items[row]["items"]]
        assert all(m.box in boxes for m in result.marks)
    top = session.current.results[0]  # l0400-ish: a red handbag and white sneakers, each box on its own product
    items = looks.catalog.items[looks.catalog.row(top.id)]["items"]
    parts = {tuple(map(float, p["box"])): p["category"] for p in items}
    assert [parts[m.box] for m in top.marks] == ["handbag", "sneaker"]
    assert top.to_dict()["marks"][0]["label"] == "1. a red handbag"


@pytest.mark.parametrize("query, tab", [
    ("?q=green+dotted+scarf&k=5", "describe"),
    ("?ref=p00024&mod=make+it+blue+and+striped", "modify"),
    ("?rounds=a+red+handbag|white+sneakers", "drill-down"),
    ("?k=5", None),
])
def test_links_reproduce_a_search(query, tab):
    from urllib.parse import parse_qsl

    keys = {"describe": describe_tab.LINK_KEY, "modify": modify_tab.LINK_KEY, "drill-down": drill_tab.LINK_KEY}
    found = link_search(dict(parse_qsl(query[1:])), {name: TabParts(None, key, None) for name, key in keys.items()})
    assert (found[0] if found else None) == tab
    params = found[1] if found else {}
    if tab == "describe":
        assert params["q"] == "green dotted scarf" and link_k(params) == 5
    if tab == "modify":
        assert (params["ref"], params["mod"], link_k(params)) == ("p00024", "make it blue and striped", 12)
    if tab == "drill-down":
        assert drill_tab.link_rounds(params) == ["a red handbag", "white sneakers"]


def test_handlers_type_hints_resolve_at_run_time():
    """Gradio passes gr.Request and gr.SelectData by reading the handlers' type hints; a hint it
    cannot resolve (a name imported for type checking only) silently drops them."""
    import typing

    checked = 0
    for handlers in (describe_tab.DescribeTab, modify_tab.ModifyTab, drill_tab.DrillDownTab):
        for name in dir(handlers):
            if not name.startswith("_") and callable(getattr(handlers, name)):
                hints = typing.get_type_hints(getattr(handlers, name))
                checked += "request" in hints or "evt" in hints
    assert checked >= 8  # every search handler takes the request, every select handler its event


def test_the_page_is_served_before_the_model_loads(served):
    """`hsl-demo serve` serves the page from the catalogs alone, then loads the model: a search
    sent meanwhile waits for it, and the footer tells the model once it is there."""
    import threading
    import urllib.request

    from gradio_client import Client

    from hsl_demo.ui import serve

    _, products, looks = served
    models = AppModels(products.catalog, looks.catalog)
    demo = serve(models, block=False, server_name="127.0.0.1", quiet=True)
    try:
        with urllib.request.urlopen(demo.local_url, timeout=30) as page:
            assert page.status == 200
        client = Client(demo.local_url, verbose=False)
        job = client.submit("green dotted scarf", 3, api_name="/describe")
        threading.Timer(1.0, models.set, (products, looks)).start()  # the model "loads" a second later
        gallery, *_ = job.result(timeout=60)
        assert captions(gallery)[0].startswith("#1 Green dotted")
        # a tab per registered mode, in the registry's order, titled as the modes are
        from hsl_demo import modes

        tabs = [c["props"] for c in demo.config["components"] if c["type"] == "tabitem"]
        assert [(t["label"], t["id"]) for t in tabs] == [(m.title, m.name) for m in modes.MODES.values()]
    finally:
        demo.close()


@pytest.mark.parametrize("flag, value, fragment", [
    ("--model", "/no/such/model", "/no/such/model"),
    ("--catalog", "/no/such/catalog", "/no/such/catalog"),
    ("--looks-catalog", "/no/such/looks", "/no/such/looks"),
])
def test_serve_with_a_bad_model_or_catalog_exits_with_one_line(flag, value, fragment):
    assert_clean_error(run_cli("serve", flag, value), fragment)


def test_app_py_is_hsl_demo_serve():
    """The Space entry point, run as a Space runs it (the one subprocess of this module)."""
    proc = subprocess.run([sys.executable, "app.py", "--looks-catalog", "/no/such/looks"], capture_output=True,
                          text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hsl-demo: error: ") and "/no/such/looks" in lines[0]


def test_the_load_bench_client_speaks_the_queue_protocol(served):
    """bench/bench_load.py's light client against the served app: every request answered, the
    drill-down rounds kept per visitor, the thumbnails fetched."""
    import asyncio
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_load", REPO / "bench" / "bench_load.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_load"] = bench  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    load, seconds = asyncio.run(bench.drive(served[0].local_url, users=2, seconds=3, max_requests=12,
                                            request_timeout=60))
    assert load.error_samples == [] and sum(len(v) for v in load.latency.values()) == 12
    assert load.images > 0 and set(load.latency) >= {"describe"}
