"""Entry points: ``python -m jobs.caption`` for ``ray job submit``, and the ``vlmbatch`` command."""
