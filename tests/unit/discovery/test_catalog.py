"""Provider catalog: built-in hosts, wildcard semantics, registry overrides, the gateway."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.discovery import BUILTIN, Catalog, CatalogError, Match, Provider, validate_pattern
from agent.errors import RegistryError
from agent.registry import LLMProvider, Meta, load_directory

EXAMPLES = Path(__file__).parents[3] / "examples" / "registry"


@pytest.mark.parametrize(
    ("host", "provider"),
    [
        ("api.openai.com", "openai"),
        ("myres.openai.azure.com", "azure-openai"),
        ("myres.cognitiveservices.azure.com", "azure-openai"),
        ("myres.services.ai.azure.com", "azure-ai-foundry"),
        ("api.anthropic.com", "anthropic"),
        ("generativelanguage.googleapis.com", "google-gemini"),
        ("aiplatform.googleapis.com", "google-vertex-ai"),
        ("us-central1-aiplatform.googleapis.com", "google-vertex-ai"),
        ("europe-west4-aiplatform.googleapis.com", "google-vertex-ai"),
        ("bedrock-runtime.us-east-1.amazonaws.com", "aws-bedrock"),
        ("bedrock-runtime-fips.us-gov-west-1.amazonaws.com", "aws-bedrock"),
        ("bedrock-runtime.cn-north-1.amazonaws.com.cn", "aws-bedrock"),
        ("api.mistral.ai", "mistral"),
        ("api.cohere.ai", "cohere"),
        ("api.cohere.com", "cohere"),
        ("api.groq.com", "groq"),
        ("api.together.xyz", "together"),
        ("api.together.ai", "together"),
        ("api.deepseek.com", "deepseek"),
        ("api.x.ai", "xai"),
        ("openrouter.ai", "openrouter"),
        ("api-inference.huggingface.co", "huggingface"),
        ("router.huggingface.co", "huggingface"),
        ("xyz123.us-east-1.aws.endpoints.huggingface.cloud", "huggingface"),
        ("api.perplexity.ai", "perplexity"),
        ("api.fireworks.ai", "fireworks"),
        ("api.replicate.com", "replicate"),
        ("api.cerebras.ai", "cerebras"),
    ],
)
def test_builtin_hosts(host: str, provider: str) -> None:
    m = Catalog.builtin().match(host)
    assert m is not None and m.provider == provider and not m.gateway and m.builtin


@pytest.mark.parametrize(
    "host",
    [
        "openai.com", "www.openai.com", "chat.openai.com.evil.example", "api.openai.com.evil",
        "openai.azure.com",  # the leading `*.` needs at least one label
        "bedrock-runtime.amazonaws.com",  # inner `*` is exactly one label
        "bedrock-runtime.a.b.amazonaws.com",
        "s3.us-east-1.amazonaws.com",
        "-aiplatform.googleapis.com",  # `*` inside a label needs one character or more
        "aiplatform.googleapis.com.evil", "storage.googleapis.com",
        "x.openrouter.ai", "endpoints.huggingface.cloud", "example.com",
        "", ".", "..", "a..openai.azure.com", "x." * 130 + "openai.azure.com",
        "ÿ.openai.azure.com", "a b.openai.azure.com", "api.openai.com..",
    ],
)
def test_non_matches(host: str) -> None:
    assert Catalog.builtin().match(host) is None


def test_case_and_trailing_dot() -> None:
    cat = Catalog.builtin()
    assert cat.match("API.OpenAI.COM.") == Match("openai", "api.openai.com", False, True)
    assert cat.match("A.B.OPENAI.AZURE.COM") == Match(
        "azure-openai", "*.openai.azure.com", False, True)


def test_leading_wildcard_takes_one_or_more_labels() -> None:
    cat = Catalog([_p("x", "*.ml.example.com")])
    assert cat.match("a.ml.example.com") is not None
    assert cat.match("a.b.c.ml.example.com") is not None
    assert cat.match("ml.example.com") is None


def test_most_specific_pattern_wins() -> None:
    cat = Catalog([
        _p("wide", "*.example.com"),
        _p("inner", "*.eu.example.com"),
        _p("label", "api-*.eu.example.com"),
        _p("exact", "api-1.eu.example.com"),
    ])
    assert _name(cat, "api-1.eu.example.com") == "exact"
    assert _name(cat, "api-2.eu.example.com") == "label"
    assert _name(cat, "x.eu.example.com") == "inner"
    assert _name(cat, "x.us.example.com") == "wide"


def test_records_extend_override_and_mark_the_gateway() -> None:
    recs = [
        _rec("openai", ["openai.corp-proxy.example"]),  # replaces the built-in entry
        _rec("ai-gateway", ["gateway.ai.internal", "*.gateway.ai.internal"], gateway=True),
        _rec("internal-vllm", ["llm.ml.internal"]),
        _rec("corp-azure", ["prod.openai.azure.com"]),  # more specific than the built-in
    ]
    cat = Catalog.with_records(recs)
    assert cat.match("api.openai.com") is None
    assert cat.match("openai.corp-proxy.example") == Match(
        "openai", "openai.corp-proxy.example", False, False)
    gw = cat.match("eu.gateway.ai.internal")
    assert gw is not None and gw.gateway and gw.provider == "ai-gateway"
    assert _name(cat, "llm.ml.internal") == "internal-vllm"
    assert _name(cat, "prod.openai.azure.com") == "corp-azure"
    assert _name(cat, "dev.openai.azure.com") == "azure-openai"
    assert _name(cat, "api.anthropic.com") == "anthropic"  # the rest of the built-ins stay


def test_on_a_tie_gateway_beats_record_beats_builtin() -> None:
    assert _name(Catalog.with_records([_rec("mirror", ["api.anthropic.com"])]),
                 "api.anthropic.com") == "mirror"
    cat = Catalog([_p("plain", "llm.example.com"),
                   Provider("gw", ("llm.example.com",), gateway=True, builtin=False)])
    m = cat.match("llm.example.com")
    assert m is not None and m.provider == "gw" and m.gateway


def test_example_registry_providers() -> None:
    cat = Catalog.with_records(load_directory(EXAMPLES).providers)
    gw = cat.match("gateway.ai.internal")
    assert gw is not None and gw.gateway
    assert _name(cat, "llm.ml.internal") == "internal-vllm"
    assert _name(cat, "api.openai.com") == "openai"


@pytest.mark.parametrize(
    "pattern",
    ["", "*", "*.com", "*.*.com", "a.*", "api.*.com", "**.example.com", "a**b.example.com",
     "a*b*c.example.com", "bad host.example.com", "x" * 64 + ".example.com", "a..example.com",
     "ÿ.example.com", "a/b.example.com", ("a." * 127) + "com"],
)
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(CatalogError):
        validate_pattern(pattern)


def test_invalid_record_pattern_names_the_record() -> None:
    rec = LLMProvider(meta=Meta(name="bad", source="providers.yaml#3"), hosts=("*.com",))
    with pytest.raises(RegistryError, match=r"providers.yaml#3: LLMProvider `bad`: .*`\*\.com`"):
        Catalog.with_records([rec])


def test_valid_patterns_normalise() -> None:
    assert validate_pattern(" API.Example.COM. ") == "api.example.com"
    assert validate_pattern("*-x.example.com") == "*-x.example.com"


def test_every_builtin_pattern_compiles_and_matches_an_instance() -> None:
    cat = Catalog.builtin()
    for provider in BUILTIN:
        for pattern in provider.hosts:
            host = pattern.replace("*.", "a.b.", 1) if pattern.startswith("*.") else pattern
            host = host.replace("*", "x1")
            assert _name(cat, host) == provider.name, pattern


def test_ten_thousand_lookups_well_under_a_second() -> None:
    cat = Catalog.builtin()
    hosts = [f"r{i}.openai.azure.com" if i % 3 == 0 else
             f"bedrock-runtime.region-{i}.amazonaws.com" if i % 3 == 1 else
             f"svc-{i}.namespace.svc.cluster.local" for i in range(10_000)]
    start = time.perf_counter()
    found = sum(1 for h in hosts if cat.match(h) is not None)
    elapsed = time.perf_counter() - start
    assert found == 6667
    assert elapsed < 0.25, f"{elapsed:.3f} s for 10,000 distinct names"


# --- helpers ---------------------------------------------------------------------------


def _p(name: str, host: str) -> Provider:
    return Provider(name, (host,))


def _rec(name: str, hosts: list[str], *, gateway: bool = False) -> LLMProvider:
    return LLMProvider(meta=Meta(name=name, source=f"test#{name}"), hosts=tuple(hosts),
                       gateway=gateway)


def _name(cat: Catalog, host: str) -> str | None:
    m = cat.match(host)
    return None if m is None else m.provider
