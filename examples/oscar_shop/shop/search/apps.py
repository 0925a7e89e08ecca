"""The shop's fork of Oscar's search app, for one reason: browsing without a query.

Oscar lists the catalogue (home page, category pages) through Haystack. Haystack's
``simple`` backend, which needs no search server and suits a demo, searches the database
for the words of a query; a browse has no words, so it finds nothing and the shop looks
empty. This fork keeps Oscar's search page and replaces the two browse views with plain
database listings (``shop.search.views``). A shop with Solr or Elasticsearch does not need it.
"""

from oscar.apps.search import apps


class SearchConfig(apps.SearchConfig):
    name = "shop.search"
