"""Model-level audits: a dataset (folder + manifest), the audit run (CMS, maps, games), the HTML report."""
