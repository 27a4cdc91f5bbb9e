"""The self-service pages, mounted at the site root."""

from __future__ import annotations

from django.urls import path

from requests_app import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("resources/", views.resource_search, name="resource-search"),
    path("requests/", views.request_list, name="request-list"),
    path("requests/new/", views.request_new, name="request-new"),
    path("requests/<uuid:pk>/", views.request_detail, name="request-detail"),
    path("requests/<uuid:pk>/cancel/", views.request_cancel, name="request-cancel"),
    path("requests/<uuid:pk>/extend/", views.request_extend, name="request-extend"),
    path("requests/<uuid:pk>/drop/", views.request_drop, name="request-drop"),
    path("grants/<int:pk>/drop/", views.grant_drop, name="grant-drop"),
]
