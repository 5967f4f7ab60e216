r"""The report: one static page of every figure and number the stages wrote.

``zspace report --run DIR``: one static page, ``DIR/report/index.html``, and the same as ``report.md``: every
figure and table of every stage that ran, grouped by the question it answers, each with a caption and its
measured numbers. Figures are copied into ``DIR/report/figures/`` and linked relatively, so the report folder
alone can be zipped and sent; the page has no script and needs no network.

The page opens with **Findings**, one answer per question with the numbers that decide it, written from the
JSON of the stages that ran, and then answers four questions with every figure the stages drew and the
numbers that go with them.
"""
