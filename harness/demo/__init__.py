"""The end-to-end demo: its models (:mod:`harness.demo.train`) built once from the embedded MiniLM and cached.

Nothing is imported here; import the submodules you need.
"""
