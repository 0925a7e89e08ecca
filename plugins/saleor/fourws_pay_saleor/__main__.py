"""``python -m fourws_pay_saleor serve``."""

from fourws_pay_saleor.cli import main

main()
