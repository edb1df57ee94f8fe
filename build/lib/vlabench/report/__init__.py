"""Reporting: markdown/CSV tables, bar charts and paired comparisons built from results directories."""
