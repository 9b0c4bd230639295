"""The CI gate: compare a candidate model's audit with a baseline's under a policy file.

policy.py reads the policy, audits.py reads audit.json files, drift.py measures map distances,
compare.py judges (one Check per policy line), junit.py and summary.py render the verdict, and
inputs.py turns a model given instead of an audit into an audit through faceaudit.audit.run.
"""
