"""The comparison report: `python -m report` turns the results files into index.html and report.md.

Every number in the report is read from a results file under the artifacts
root; nothing is measured here and nothing is typed into a template.
"""
