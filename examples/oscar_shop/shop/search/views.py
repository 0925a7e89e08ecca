"""Catalogue and category listings read from the database (see ``shop.search.apps``).

Oscar's templates render each listed item as ``product.object`` (a Haystack result wraps
the product), so the listings hand over the same shape.
"""

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import Http404, HttpResponsePermanentRedirect
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext_lazy as _
from django.views.generic import ListView
from oscar.core.loading import get_model

Category = get_model("catalogue", "Category")
Product = get_model("catalogue", "Product")


@dataclass(frozen=True)
class Listed:
    """What Oscar's browse templates read from a search result."""

    object: Any


class CatalogueView(ListView):
    """Every public product, by title (the home page redirects here)."""

    context_object_name = "products"
    template_name = "oscar/catalogue/browse.html"
    paginate_by = settings.OSCAR_PRODUCTS_PER_PAGE

    def products(self) -> Any:
        return Product.objects.browsable().order_by("title")

    def get_queryset(self) -> list[Listed]:
        return [Listed(p) for p in self.products()]

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["summary"] = _("All products")
        return context


class ProductCategoryView(CatalogueView):
    """The public products of a category and its subcategories."""

    template_name = "oscar/catalogue/category.html"

    def get(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        self.category = get_object_or_404(Category, pk=kwargs["pk"])
        if not (self.category.is_public or request.user.is_staff):
            raise Http404
        expected = self.category.get_absolute_url()
        if expected != request.path:  # the slug changed: Oscar redirects too
            return HttpResponsePermanentRedirect(expected)
        return super().get(request, *args, **kwargs)

    def products(self) -> Any:
        tree = self.category.get_descendants_and_self()
        return super().products().filter(categories__in=tree).distinct()

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["category"] = self.category
        context["summary"] = self.category.name
        return context
