"""The OpenAPI document against the server, and the strictness of the request bodies.

The property test reads the document the front door serves, builds requests from its
schemas with Hypothesis (bodies the document calls valid, bodies it calls invalid, bad
keys), sends them to a live front door with sim workers, and checks every answer against
the document: a status it lists for the route, never a 5xx, a body of the schema it gives.
The generator below covers the part of JSON Schema that pydantic writes for our bodies,
and stops with a message on any keyword it does not know, so a new kind of field in the
document is noticed rather than silently not tested.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sllm.api.errors import TYPES, invalid_request
from sllm.api.params import FRONT_DOOR, PARAMETERS, refusal
from sllm.api.schemas import ChatCompletionRequest, CompletionRequest
from sllm.engines.sim import SimEngine

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "serving-test-key-1"  # the `sim_cluster` fixture's key
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SIM_MODEL = "llama-3.2-1b"  # prestaged in host memory by the cluster: a load of 0.6 s
CHAT = '"model": "llama-3.2-1b", "messages": [{"role": "user", "content": "hi"}]'
COMPLETION_STATUSES = {"200", "400", "401", "404", "408", "413", "429", "502", "503", "504"}
# The bodies each completion route validates, to say which valid bodies the sim refuses.
BODIES = {"/v1/chat/completions": ChatCompletionRequest, "/v1/completions": CompletionRequest}
# Enough requests to meet every kind of body and mutation more than once, in about 10 s.
EXAMPLES = 150
# A request to a served model asks for at most this many tokens, so it ends in milliseconds.
SHORT_ANSWER_TOKENS = 4
# Generated strings and arrays stay short: their length is not what is under test.
TEXT_CHARS = 12
ARRAY_ITEMS = 3


# -- strict types, plain messages ----------------------------------------------------------


def _refused(body: str, schema: type[Any] = ChatCompletionRequest) -> tuple[str | None, str]:
    """(param, message) of the 400 for `body`."""
    with pytest.raises(ValidationError) as raised:
        schema.model_validate_json(body)
    error = invalid_request(raised.value.errors())
    assert error.status == 400
    return error.param, error.message


@pytest.mark.parametrize(
    ("change", "param", "message"),
    [
        ('"stream": "yes"', "stream", 'stream must be a boolean (true or false), got "yes"'),
        ('"stream": 1', "stream", "stream must be a boolean (true or false), got 1"),
        ('"max_tokens": 4.0', "max_tokens", "max_tokens must be an integer, got 4.0"),
        ('"max_tokens": "4"', "max_tokens", 'max_tokens must be an integer, got "4"'),
        ('"max_tokens": true', "max_tokens", "max_tokens must be an integer, got true"),
        ('"max_completion_tokens": 8.0', "max_completion_tokens", None),
        ('"n": 1.0', "n", "n must be an integer, got 1.0"),
        ('"seed": 7.5', "seed", "seed must be an integer, got 7.5"),
        ('"temperature": NaN', "temperature", "temperature must be a finite number, got NaN"),
        ('"temperature": Infinity', "temperature", None),
        ('"temperature": 1e999', "temperature", None),
        ('"top_p": -Infinity', "top_p", "top_p must be a finite number, got -Infinity"),
        ('"temperature": "1"', "temperature", 'temperature must be a number, got "1"'),
        ('"temperature": 5', "temperature", "temperature must be at most 2.0, got 5"),
        ('"stop": 5', "stop", "stop must be a string or an array, got 5"),
        ('"stop": ["a", 1]', "stop.1", "stop.1 must be a string, got 1"),
        ('"stop": ["a", "b", "c", "d", "e"]', "stop", None),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_field(change, param, message) -> None:
    got_param, got_message = _refused("{" + CHAT + ", " + change + "}")
    assert got_param == param
    if message is not None:
        assert got_message == message
    assert got_message.startswith(param + " must ")


def test_the_whole_body_and_missing_fields_are_named_plainly() -> None:
    assert _refused("[1]") == (None, "the request body must be a JSON object, got [1]")
    assert _refused('{"model": "m"}', CompletionRequest) == ("prompt", "prompt is required")
    assert _refused('{"model": "m", "prompt": ["a", "b"]}', CompletionRequest) == (
        "prompt",
        'prompt must have at most 1 item(s), got ["a", "b"]',
    )
    param, message = _refused('{"model": "m", "messages": [{"role": "bot", "content": ""}]}')
    assert param == "messages.0.role" and "must be one of" in message and '"bot"' in message


def test_what_openai_clients_send_is_still_accepted() -> None:
    """Strict, not stricter than OpenAI: a whole number for a float, null for the optional."""
    body = ChatCompletionRequest.model_validate_json(
        "{" + CHAT + ', "stream": true, "temperature": 1, "top_p": 0.5, "max_tokens": 3,'
        ' "max_completion_tokens": null, "stop": ["x"], "seed": 7, "n": 1, "user": "u"}'
    )
    assert (body.temperature, body.output_tokens, body.stop_sequences) == (1.0, 3, ("x",))
    # The worker's routes validate the front door's re-encoded body in Python mode.
    again = ChatCompletionRequest.model_validate(json.loads(json.dumps(body.model_dump())))
    assert again == body
    one = CompletionRequest.model_validate_json('{"model": "m", "prompt": ["p"]}')
    assert one.prompt_text == "p"


@pytest.mark.integration
def test_the_front_door_refuses_the_lax_values(sim_cluster) -> None:
    with httpx.Client(base_url=sim_cluster.base_url, timeout=30) as http:
        for change, param in [
            ('"stream": "yes"', "stream"),
            ('"max_tokens": 4.0', "max_tokens"),
            ('"temperature": NaN', "temperature"),
        ]:
            response = http.post(
                "/v1/chat/completions",
                content="{" + CHAT + ", " + change + "}",
                headers={**AUTH, "content-type": "application/json"},
            )
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["param"] == param and error["type"] == "invalid_request_error"


# -- the document --------------------------------------------------------------------------


def test_the_document_lists_the_statuses_the_server_sends_and_no_422() -> None:
    text = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    document = json.loads(text)
    assert '"422"' not in text and "HTTPValidationError" not in text
    paths = document["paths"]
    for path in ("/v1/chat/completions", "/v1/completions"):
        assert set(paths[path]["post"]["responses"]) == COMPLETION_STATUSES
    assert set(paths["/v1/models"]["get"]["responses"]) == {"200", "401"}
    assert set(paths["/v1/models/{model_id}"]["get"]["responses"]) == {"200", "401", "404"}
    for operations in paths.values():
        for operation in operations.values():
            assert operation["security"] == [{"apiKey": []}]
            for status, response in operation["responses"].items():
                if status == "200":
                    continue
                assert int(status) in TYPES  # an error the server knows how to write
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}
                assert ("Retry-After" in response.get("headers", {})) == (status == "429")
    error = document["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"message", "type", "param", "code"}
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"


# -- requests built from the document ------------------------------------------------------

_ANNOTATIONS = frozenset({"title", "description", "default", "examples"})
_KEYWORDS = frozenset(
    {
        "$ref",
        "anyOf",
        "const",
        "enum",
        "type",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "minLength",
        "maxLength",
        "items",
        "minItems",
        "maxItems",
        "properties",
        "required",
        "additionalProperties",
    }
)
_JSON_TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")


@dataclass(frozen=True)
class Schemas:
    """The document's JSON schemas, turned into Hypothesis strategies."""

    document: dict[str, Any]

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            *_, name = schema["$ref"].split("/")
            schema = self.document["components"]["schemas"][name]
        unknown = set(schema) - _KEYWORDS - _ANNOTATIONS
        assert not unknown, f"the generator does not know {sorted(unknown)}: teach it"
        return schema

    def types(self, schema: dict[str, Any]) -> set[str]:
        """The JSON types `schema` admits (a number admits integers)."""
        schema = self.resolve(schema)
        if "anyOf" in schema:
            return set().union(*(self.types(member) for member in schema["anyOf"]))
        if "const" in schema or "enum" in schema:
            return {"string"}
        kind = schema["type"]
        return {kind, "integer"} if kind == "number" else {kind}

    def valid(self, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
        """Values the document calls valid."""
        schema = self.resolve(schema)
        if "anyOf" in schema:
            return st.one_of([self.valid(member) for member in schema["anyOf"]])
        if "const" in schema:
            return st.just(schema["const"])
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        kind = schema["type"]
        if kind == "integer":
            low = schema.get("minimum")
            high = schema.get("maximum")
            return st.integers(
                None if low is None else math.ceil(low), None if high is None else int(high)
            )
        if kind == "number":
            low = schema.get("minimum", schema.get("exclusiveMinimum"))
            return st.floats(
                low,
                schema.get("maximum"),
                exclude_min="exclusiveMinimum" in schema,
                allow_nan=False,
                allow_infinity=False,
            )
        if kind == "string":
            low = schema.get("minLength", 0)
            return st.text(
                min_size=low, max_size=min(schema.get("maxLength", TEXT_CHARS), TEXT_CHARS)
            )
        if kind == "array":
            low = schema.get("minItems", 0)
            high = min(schema.get("maxItems", ARRAY_ITEMS), max(low, ARRAY_ITEMS))
            return st.lists(self.valid(schema["items"]), min_size=low, max_size=high)
        if kind == "object":
            properties = schema.get("properties", {})
            required = set(schema.get("required", ()))
            return st.fixed_dictionaries(
                {name: self.valid(properties[name]) for name in sorted(required)},
                optional={
                    name: self.valid(value)
                    for name, value in properties.items()
                    if name not in required
                },
            )
        return {"null": st.none(), "boolean": st.booleans()}[kind]

    def invalid(self, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
        """Values the document calls invalid: another type, or over a limit.

        One exception: a whole number written as a float (4.0) counts as another type for
        an integer, as it does for OpenAI, though JSON Schema would call it an integer.
        """
        schema = self.resolve(schema)
        others = [kind for kind in _JSON_TYPES if kind not in self.types(schema)]
        choices = [st.one_of([_VALUES_OF_TYPE[kind] for kind in others])] if others else []
        members = schema.get("anyOf", [schema])
        for member in members:
            rest = [other for other in members if other is not member]
            taken = set().union(*(self.types(other) for other in rest))
            if not self.types(member) & taken:  # a value only this member could hold
                choices += self._over_a_limit(self.resolve(member))
        return st.one_of(choices)

    def _over_a_limit(self, schema: dict[str, Any]) -> list[st.SearchStrategy[Any]]:
        choices: list[st.SearchStrategy[Any]] = []
        if "enum" in schema or "const" in schema:
            allowed = schema.get("enum", [schema.get("const")])
            choices.append(st.text(max_size=TEXT_CHARS).filter(lambda text: text not in allowed))
        kind = schema.get("type")
        if kind in ("integer", "number"):
            whole = int if kind == "integer" else float  # the document writes 1.0 for 1
            if "minimum" in schema:
                choices.append(st.just(whole(schema["minimum"]) - 1))
            if "exclusiveMinimum" in schema:
                choices.append(st.just(whole(schema["exclusiveMinimum"])))
            if "maximum" in schema:
                choices.append(st.just(whole(schema["maximum"]) + 1))
            if kind == "number":
                choices.append(st.sampled_from([math.nan, math.inf, -math.inf]))
        if kind == "string":
            if schema.get("minLength", 0) > 0:
                choices.append(st.text(max_size=schema["minLength"] - 1))
            if "maxLength" in schema:
                choices.append(st.just("x" * (schema["maxLength"] + 1)))
        if kind == "array":
            item = self.valid(schema["items"])
            if schema.get("minItems", 0) > 0:
                choices.append(st.lists(item, max_size=schema["minItems"] - 1))
            if "maxItems" in schema:
                size = schema["maxItems"] + 1
                choices.append(st.lists(item, min_size=size, max_size=size))
            choices.append(st.tuples(self.invalid(schema["items"])).map(list))
        if kind == "object":
            properties = schema.get("properties", {})
            if schema.get("additionalProperties") is False:  # a field it does not declare
                choices.append(self.valid(schema).map(lambda body: {**body, "not_a_field": 1}))
            for name in schema.get("required", ()):
                choices.append(self.valid(schema).map(lambda body, name=name: _without(body, name)))
            for name, value in properties.items():
                choices.append(
                    st.tuples(self.valid(schema), self.invalid(value)).map(
                        lambda pair, name=name: {**pair[0], name: pair[1]}
                    )
                )
        return choices


def _without(body: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != name}


_VALUES_OF_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "integer": st.integers(-3, 10**6),
    # Floats, including whole ones (4.0), NaN and the infinities.
    "number": st.one_of(st.floats(), st.integers(-3, 100).map(float)),
    "string": st.one_of(st.just("yes"), st.text(max_size=TEXT_CHARS)),
    "array": st.lists(st.integers(), max_size=ARRAY_ITEMS),
    "object": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
}


@dataclass(frozen=True)
class Call:
    """One request, and the statuses it must get in a healthy cluster with capacity."""

    method: str
    path: str
    expected: frozenset[int]
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    route: str = ""  # the document's path, when `path` fills in its parameters

    @property
    def documented_path(self) -> str:
        return self.route or self.path


def _bad_keys() -> st.SearchStrategy[dict[str, str]]:
    return st.sampled_from(
        [
            {},
            {"Authorization": "Bearer not-the-key"},
            {"Authorization": f"Basic {API_KEY}"},
            {"Authorization": "Bearer"},
        ]
    )


def calls(schemas: Schemas, catalog: list[str]) -> st.SearchStrategy[Call]:
    """Requests to every operation of the document, valid and not."""
    choices = []
    for path, operations in schemas.document["paths"].items():
        for method, operation in operations.items():
            keyed = "security" in operation
            if "{model_id}" in path:  # a served model, or one the catalog does not have
                for model, status in ((SIM_MODEL, 200), ("no-such-model", 404)):
                    filled = path.replace("{model_id}", model)
                    choices.append(
                        st.just(Call(method.upper(), filled, frozenset({status}), AUTH, None, path))
                    )
            elif "requestBody" not in operation:
                choices.append(st.just(Call(method.upper(), path, frozenset({200}), AUTH)))
            else:
                schema = operation["requestBody"]["content"]["application/json"]["schema"]
                choices += _body_calls(schemas, schema, method.upper(), path, catalog)
            if keyed:
                choices.append(
                    _bad_keys().map(
                        lambda headers, method=method, path=path: Call(
                            method.upper(), path, frozenset({401}), headers, b"{}"
                        )
                    )
                )
    # Each kind of request equally often: `one_of` would flatten the many branches of
    # `Schemas.invalid` into its own, and send little else.
    return st.sampled_from(choices).flatmap(lambda chosen: chosen)


def _body_calls(
    schemas: Schemas, schema: dict[str, Any], method: str, path: str, catalog: list[str]
) -> list[st.SearchStrategy[Call]]:
    """A valid body (for `SIM_MODEL`, which loads in a moment, or for a model not in the
    catalog), an invalid one, or one that is not JSON."""
    json_headers = {**AUTH, "content-type": "application/json"}

    def valid_call(body: dict[str, Any], to_served: str | None, only_honoured: bool) -> Call:
        expected = {200} if body["model"] in catalog else {404}
        if to_served is not None:  # answered: kept short
            body = {**body, "model": to_served}
            for name in ("max_tokens", "max_completion_tokens"):
                if body.get(name) is not None:
                    body[name] = min(body[name], SHORT_ANSWER_TOKENS)
            body.setdefault("max_tokens", SHORT_ANSWER_TOKENS)
            if only_honoured:  # else a 400 is likely: most bodies ask for something unhonoured
                body = {name: value for name, value in body.items() if _sim_honours(name)}
                if not body.get("stream"):
                    body.pop("stream_options", None)
            validated = BODIES[path].model_validate(body)
            refused = refusal(validated, engine="sim", honoured=SimEngine.honoured_params)
            expected = {200} if refused is None else {400}
        return Call(method, path, frozenset(expected), json_headers, json.dumps(body).encode())

    def invalid_call(body: Any) -> Call:
        return Call(method, path, frozenset({400}), json_headers, json.dumps(body).encode())

    not_json = st.sampled_from([b"", b"{", b'{"model": }', b"\xff\xfe", b"NaN nope"])
    return [
        st.builds(
            valid_call, schemas.valid(schema), st.sampled_from([None, SIM_MODEL]), st.booleans()
        ),
        schemas.invalid(schema).map(invalid_call),
        not_json.map(lambda body: Call(method, path, frozenset({400}), json_headers, body)),
    ]


def _sim_honours(name: str) -> bool:
    carrier = PARAMETERS[name]
    return carrier == FRONT_DOOR or carrier in SimEngine.honoured_params


def _conforms(document: dict[str, Any], schema: dict[str, Any], value: Any) -> None:
    jsonschema.validate(value, {**schema, "components": document["components"]})


@pytest.mark.integration
def test_requests_built_from_the_document_get_the_statuses_it_lists(sim_cluster) -> None:
    with httpx.Client(base_url=sim_cluster.base_url, timeout=30) as http:
        document = http.get("/openapi.json").json()
        catalog = [card["id"] for card in http.get("/v1/models", headers=AUTH).json()["data"]]
        assert SIM_MODEL in catalog
        schemas = Schemas(document)
        seen: set[tuple[str, int]] = set()

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            phases=[Phase.explicit, Phase.generate],  # shrinking re-sends for minutes
        )
        @given(calls(schemas, catalog))
        def check(call: Call) -> None:
            response = http.request(call.method, call.path, headers=call.headers, content=call.body)
            status = response.status_code
            seen.add((call.documented_path, status))
            documented = document["paths"][call.documented_path][call.method.lower()]["responses"]
            what = f"{call.method} {call.path} {call.body!r:.300} -> {status} {response.text:.300}"
            assert str(status) in documented, "undocumented status: " + what
            assert status < 500, what
            assert status in call.expected, what
            answer = documented[str(status)]
            content_type = response.headers["content-type"].split(";")[0]
            assert content_type in answer["content"], what
            if content_type == "application/json":
                _conforms(document, answer["content"][content_type]["schema"], response.json())
            for header, spec in answer.get("headers", {}).items():
                assert not spec.get("required") or header in response.headers, what

        check()
    # The run met each kind of answer on each completion route.
    for path in ("/v1/chat/completions", "/v1/completions"):
        assert {status for seen_path, status in seen if seen_path == path} >= {200, 400, 401, 404}
