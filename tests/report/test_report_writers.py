"""report.md references every PNG written beside it; report.html embeds the same PNGs as data URIs
and loads nothing from elsewhere."""

import base64
import re
from html.parser import HTMLParser

import pytest

from simtune.hardware import load_profile
from simtune.report import build_document, read_search, write_report
from simtune.report.document import Document, Figure, Paragraph, Section, Table
from simtune.report.markdown import document_markdown
from simtune.report.plots.style import new_figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Resources(HTMLParser):
    """Every attribute that makes a browser fetch something, and every image source."""

    def __init__(self):
        super().__init__()
        self.images, self.references, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src", ""))
        for key in ("src", "href", "srcset", "poster", "data", "action"):
            if key in values:
                self.references.append((tag, key, values[key]))


@pytest.fixture(scope="module")
def capacity_report(study, tmp_path_factory):
    folder = tmp_path_factory.mktemp("capacity")
    return build_document(study), write_report(build_document(study), folder)


def test_markdown_references_every_png_and_each_png_exists(capacity_report):
    document, written = capacity_report
    markdown = written.markdown_path.read_text()
    names = [f.name for f in document.figures]
    assert len(names) == 8  # step time, 2 x memory, 2 x micro-batch, scaling, cost, largest model
    referenced = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert sorted(referenced) == sorted(f"{n}.png" for n in names)
    for name in referenced:
        data = (written.folder / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    assert sorted(p.name for p in written.folder.glob("*.png")) == sorted(referenced)


def test_html_embeds_every_png_as_a_data_uri_and_has_no_external_reference(capacity_report):
    document, written = capacity_report
    page = written.html_path.read_text()
    parser = _Resources()
    parser.feed(page)
    assert len(parser.images) == len(document.figures)
    for source, figure in zip(parser.images, document.figures):
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]) == (written.folder / f"{figure.name}.png").read_bytes()
    for tag, key, value in parser.references:
        assert value.startswith(("data:", "#")), (tag, key, value[:60])
    assert "script" not in parser.tags and "link" not in parser.tags and "iframe" not in parser.tags
    assert "@import" not in page and "url(" not in page


def test_every_section_and_the_provenance_of_each_profile_are_in_the_report(capacity_report):
    _, written = capacity_report
    markdown = written.markdown_path.read_text()
    for title in ("## Summary", "## Best configuration per profile and GPU count", "## Memory per GPU by ZeRO stage",
                  "## Micro-batch size", "## Scaling with GPU count", "## Time and cost to train",
                  "## Largest GPT-2 model that fits", "## Assumptions", "### Profile `dgx2-v100-32gb`",
                  "### Profile `dgx-a100-80gb`"):
        assert title in markdown
    for source in load_profile("dgx2-v100-32gb").provenance.sources:
        assert source in markdown
    assert "spec: derived from vendor numbers" in markdown
    assert "$" in markdown  # the cost column, a price was given


def test_markdown_tables_escape_pipes_and_keep_their_columns():
    table = Table(("a", "b"), (("x|y", "2"),), (False, True))
    text = document_markdown(Document("T", (Section("S", (table,)),)))
    assert "| x\\|y | 2 |" in text and "|:---|---:|" in text
    with pytest.raises(ValueError):
        Table(("a", "b"), (("only one",),))


def test_html_escapes_text_and_renders_code_spans(tmp_path):
    def draw(_):
        figure = new_figure(2, 2)
        figure.subplots().plot([0, 1], [0, 1])
        return figure

    document = Document("<T>", (Section("S & s", (Paragraph("use `simtune report` <now>"),
                                                  Figure("f", "a \"quoted\" caption", None, draw))),))
    written = write_report(document, tmp_path)
    page = written.html_path.read_text()
    assert "<title>&lt;T&gt;</title>" in page and "S &amp; s" in page
    assert "use <code>simtune report</code> &lt;now&gt;" in page
    assert 'alt="a &quot;quoted&quot; caption"' in page


def test_search_report_writes_its_plots(make_search, tmp_path):
    folder = make_search(predicted={"z0_gas1_tmbspg1": 110.0, "z0_gas1_tmbspg16": 270.0})
    document = build_document(search=read_search(folder), search_profile=load_profile("dgx-a100-80gb"))
    written = write_report(document, tmp_path / "out")
    assert sorted(p.name for p in written.image_paths) == ["calibration-collectives.png", "predicted-vs-measured.png",
                                                           "search-history.png"]
    markdown = written.markdown_path.read_text()
    assert "| 2 | `z0_gas1_tmbspg16` | 270 | 300 | -10.0% |" in markdown
    assert "mean absolute error is 10.0%" in markdown
    assert "Tuning completed in 0:00:42" in markdown  # summary.txt, as the search wrote it


def test_predictions_that_were_not_run_are_listed_best_first(make_search, tmp_path):
    folder = make_search(predictions_json={"profile": "dgx-a100-80gb", "predictions": [
        {"name": "z3_gas1_tmbspg24", "predicted_metric_value": 498.6},
        {"name": "z2_gas1_tmbspg24", "predicted_metric_value": 492.0}]})
    written = write_report(build_document(search=read_search(folder)), tmp_path / "out")
    markdown = written.markdown_path.read_text()
    assert "Predicted but not run: 2 configuration(s), best first." in markdown
    assert markdown.index("z3_gas1_tmbspg24") < markdown.index("z2_gas1_tmbspg24")
