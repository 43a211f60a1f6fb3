"""Built-in reporters: the rich summary table, JSON, Markdown and CSV."""

from xferbench import Option, ReporterSpec, hookimpl

_OUTPUT = Option("output", str, "", "write to this file (atomically) instead of standard output")


@hookimpl
def xferbench_register_reporters(register):
    register(ReporterSpec("table", "rich summary: one row per run, dataset and machine panels",
                          factory="xferbench_reporters.table:TableReporter",
                          options=(_OUTPUT, Option("width", int, 0, "table width in characters (0: the terminal's, "
                                                                    "200 when piped)", min=0))))
    register(ReporterSpec("json", "the whole results document as JSON",
                          factory="xferbench_reporters.text:JsonReporter", options=(_OUTPUT,)))
    register(ReporterSpec("markdown", "the summary rows as a Markdown table",
                          factory="xferbench_reporters.text:MarkdownReporter", options=(_OUTPUT,)))
    register(ReporterSpec("csv", "the summary rows as CSV",
                          factory="xferbench_reporters.text:CsvReporter",
                          options=(_OUTPUT, Option("delimiter", str, ",", "field separator",
                                                   choices=(",", ";", "tab")))))
