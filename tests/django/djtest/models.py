from django.db import models


class Shelf(models.Model):
    name = models.CharField(max_length=50)


class Item(models.Model):
    name = models.CharField(max_length=50)
    shelf = models.ForeignKey(Shelf, on_delete=models.CASCADE, related_name="items")


class Note(models.Model):
    """Lives in the ``other`` database (see routers.py)."""

    text = models.CharField(max_length=100)
