"""An Oscar shop whose customers pay with 4WS gift cards (fourws-pay-oscar)."""
