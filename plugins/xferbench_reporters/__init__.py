"""Built-in reporters: the rich summary table, JSON, Markdown and CSV."""

from xferbench import ReporterSpec, hookimpl


@hookimpl
def xferbench_register_reporters(register):
    register(ReporterSpec("table", "rich summary: one row per method, dataset and machine panels",
                          factory="xferbench_reporters.table:TableReporter"))
    register(ReporterSpec("json", "the whole results document as JSON on stdout",
                          factory="xferbench_reporters.text:JsonReporter"))
    register(ReporterSpec("markdown", "the summary rows as a Markdown table",
                          factory="xferbench_reporters.text:MarkdownReporter"))
    register(ReporterSpec("csv", "the summary rows as CSV",
                          factory="xferbench_reporters.text:CsvReporter"))
