from __future__ import annotations

from rest_framework import serializers

from inventory.models import Resource


class ResourceRefSerializer(serializers.ModelSerializer):
    ref = serializers.CharField(read_only=True)

    class Meta:
        model = Resource
        fields = ["id", "kind", "name", "ref"]


class ResourceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Resource
        fields = ["id", "kind", "name", "address", "labels", "description"]
