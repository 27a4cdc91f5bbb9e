"""The portal's URLs and ``bench/trivial/``: authenticated like the API, doing nothing else (the floor)."""

from django.urls import include, path
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView


class Trivial(APIView):
    permission_classes = [IsAuthenticated]

    def get(self, request):
        return Response({"ok": True})


urlpatterns = [
    path("bench/trivial/", Trivial.as_view()),
    path("", include("jitportal.urls")),
]
