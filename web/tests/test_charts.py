"""web/charts.py: the analytics pages' SVG, checked as XML (no browser needed)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from web.charts import bar_chart, line_chart

SVG = "{http://www.w3.org/2000/svg}"


def parsed(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


def test_bar_heights_are_proportional_to_the_values() -> None:
    svg = parsed(bar_chart([("Leads", 40), ("Bookings", 20), ("Paid", 10)], title="Funnel"))
    heights = [float(rect.attrib["height"]) for rect in svg.iter(SVG + "rect")]
    assert len(heights) == 3
    assert heights[0] == 2 * heights[1] == 4 * heights[2]
    # The tallest bar fills the plot; every bar stands on the same baseline.
    bottoms = {round(float(r.attrib["y"]) + float(r.attrib["height"]), 1) for r in svg.iter(SVG + "rect")}
    assert len(bottoms) == 1


def test_a_chart_is_labelled_for_screen_readers() -> None:
    svg = parsed(bar_chart([("Promoters", 3), ("Detractors", 1)], title="NPS answers"))
    assert svg.attrib["role"] == "img"
    assert svg.attrib["aria-label"] == "NPS answers. Promoters: 3; Detractors: 1"
    assert svg.find(SVG + "title").text == "NPS answers"  # type: ignore[union-attr]
    # No style attribute anywhere: the console's CSP forbids inline styles.
    assert all("style" not in element.attrib for element in svg.iter())


def test_empty_data_gives_an_empty_state_not_an_empty_frame() -> None:
    for chart in (bar_chart([], title="Cohorts"), line_chart([], title="Cohorts")):
        assert "<svg" not in chart
        assert "Cohorts: no data for this period" in chart


def test_all_zero_bars_are_drawn_flat() -> None:
    svg = parsed(bar_chart([("a", 0), ("b", 0)], title="Zero"))
    assert [float(r.attrib["height"]) for r in svg.iter(SVG + "rect")] == [0.0, 0.0]


def test_labels_and_titles_are_escaped() -> None:
    hostile = '<script>alert("x")</script>'
    for chart in (
        bar_chart([(hostile, 1)], title=hostile),
        line_chart([(hostile, 1), ("b", 2)], title=hostile),
    ):
        assert "<script>" not in chart
        svg = parsed(chart)  # still well-formed XML
        assert svg.find(SVG + "title").text == hostile  # type: ignore[union-attr]


def test_line_points_follow_the_values_on_a_fixed_scale() -> None:
    svg = parsed(line_chart([("W1", 0), ("W2", 5), ("W3", 10)], title="Score", y_min=0, y_max=10))
    dots = [(float(c.attrib["cx"]), float(c.attrib["cy"])) for c in svg.iter(SVG + "circle")]
    xs, ys = [x for x, _ in dots], [y for _, y in dots]
    assert xs == sorted(xs) and len(set(xs)) == 3
    assert ys[0] > ys[1] > ys[2]  # higher values sit higher (smaller y)
    assert abs((ys[0] - ys[1]) - (ys[1] - ys[2])) < 0.2  # evenly: the scale is linear
    assert len(svg.find(SVG + "polyline").attrib["points"].split()) == 3  # type: ignore[union-attr]


def test_a_single_point_and_a_flat_line_do_not_divide_by_zero() -> None:
    assert "<circle" in line_chart([("Only", 7)], title="One")
    assert "<circle" in line_chart([("a", 3), ("b", 3)], title="Flat")


def test_crowded_axis_labels_are_thinned_but_every_bar_is_drawn() -> None:
    months = [(f"2026-{m:02d}", m) for m in range(1, 13)] + [(f"2027-{m:02d}", m) for m in range(1, 13)]
    svg = parsed(bar_chart(months, title="Two years"))
    assert len(list(svg.iter(SVG + "rect"))) == 24
    axis_labels = [t.text for t in svg.iter(SVG + "text") if t.text and t.text.startswith("202")]
    assert 2 <= len(axis_labels) < 24
    assert axis_labels[0] == "2026-01"
