"""Built-in reporter ``html``: one self-contained page of charts (Plotly, inlined) for a sweep or a comparison."""

from xferbench import Option, ReporterSpec, hookimpl


@hookimpl
def xferbench_register_reporters(register):
    register(ReporterSpec(
        "html", "a self-contained HTML page: sortable table, charts, confusion matrices, misclassified thumbnails",
        factory="xferbench_html.reporter:HtmlReporter",
        options=(Option("output", str, "", "the page to write (atomically); default: the results file's name "
                                           "with .html"),
                 Option("thumbnails", int, 8, "misclassified thumbnails per run (0: none)", min=0),
                 Option("max_thumbnails", int, 200, "misclassified thumbnails in the whole page", min=0),
                 Option("images", str, "", "folder the dataset's image keys are relative to (for thumbnails; "
                                           "folder: datasets and --data-dir are found without it)"),
                 Option("regression_pct", float, 5.0, "comparison pages: a change beyond this is a regression "
                                                      "(as compare --fail-on-regression PCT)", min=0))))
