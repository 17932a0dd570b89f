"""Binding expressions (``%Setting%``) are read one way, by the local host, ``mlfn check`` and
``mlfn kube`` alike: the way the Functions host and its queue extension read them."""

from __future__ import annotations

import pytest

from runtime.config import binding_expressions
from runtime.errors import ConfigError


def test_each_expression_is_replaced_by_its_app_setting() -> None:
    settings = {"PREFIX": "orders", "REGION": "eu"}
    assert binding_expressions.resolve("%PREFIX%-%REGION%/{name}", settings) == "orders-eu/{name}"
    assert binding_expressions.resolve("plain-name", {}) == "plain-name"


def test_a_setting_that_is_not_set_is_an_error_naming_it_and_the_expression() -> None:
    with pytest.raises(ConfigError) as caught:
        binding_expressions.resolve("%PREFIX%-%REGION%", {"PREFIX": "orders"})
    assert caught.value.key == "REGION"
    assert "setting REGION is not set" in caught.value.message
    assert "'%PREFIX%-%REGION%'" in caught.value.message
    assert binding_expressions.missing("%PREFIX%-%REGION%-%ZONE%", {"PREFIX": "x"}) == [
        "REGION",
        "ZONE",
    ]


def test_a_setting_set_to_nothing_resolves_to_nothing_as_on_azure() -> None:
    # Only a missing setting fails to load; an empty one is a value (an invalid name, later).
    assert binding_expressions.resolve("%EMPTY%", {"EMPTY": ""}) == ""


def test_queue_names_are_lowercased_after_resolution_as_the_queue_extension_does() -> None:
    settings = {"IN_QUEUE": "Orders-EU"}
    assert binding_expressions.queue_name("%IN_QUEUE%", settings) == "orders-eu"
    assert binding_expressions.queue_name("Jobs", {}) == "jobs"
    # Other bindings keep their case: a blob path is the blob's name.
    assert binding_expressions.resolve("%IN_QUEUE%/{name}", settings) == "Orders-EU/{name}"


def test_the_settings_an_expression_reads_are_listed_in_order() -> None:
    assert binding_expressions.settings_read("%B%-x-%A%") == ["B", "A"]
    assert binding_expressions.settings_read("no-expression") == []


def test_a_setting_is_found_as_the_functions_host_finds_it() -> None:
    # The host reads app settings through its configuration: names ignore case, and an
    # environment variable's "__" is the section separator ":".
    settings = {"Queues__Orders": "orders-eu", "region": "eu"}
    assert binding_expressions.resolve("%Queues:Orders%-%REGION%", settings) == "orders-eu-eu"
    assert binding_expressions.resolve("%queues__orders%", settings) == "orders-eu"
    assert binding_expressions.setting_key("QUEUES:ORDERS", settings) == "Queues__Orders"
    # The exact name first, when two would match.
    assert binding_expressions.resolve("%Region%", {"REGION": "a", "Region": "b"}) == "b"
    assert binding_expressions.missing("%Queues:Other%", settings) == ["Queues:Other"]
