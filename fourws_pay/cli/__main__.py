"""``python -m fourws_pay.cli``: the ``fourws-pay`` command without its console script."""

from fourws_pay.cli import run

run()
