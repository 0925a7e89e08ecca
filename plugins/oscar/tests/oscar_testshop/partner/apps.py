from oscar.apps.partner import apps


class PartnerConfig(apps.PartnerConfig):
    name = "oscar_testshop.partner"
