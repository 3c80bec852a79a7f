"""The official openai SDK against a real gateway (uvicorn) in front of the emulator: streaming and not."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from sovcloud.gateway.app import build_gateway, create_app
from sovcloud.gateway.config import load_gateway_config, plan_backends
from sovcloud.gateway.emulator import Emulator, EmulatorOptions
from sovcloud.metering.ledger import Ledger
from sovcloud.metering.tenants import Tenant, TenantStore
from tests.support.gateway import serve_app, tiny_plan


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str, str]]:
    tmp = tmp_path_factory.mktemp("sdk")
    plan = tiny_plan(tmp)
    _, backends = plan_backends(plan)
    emu = Emulator(backends, EmulatorOptions(fixed_ms=2, chunks=5, chunk_ms=1))
    ledger = f"sqlite:///{tmp / 'ledger.db'}"
    with TenantStore.open(ledger) as store:
        key = store.add(Tenant("sdk", "SDK user", "z-fr"))
        poor = store.add(Tenant("poor", "No grant", "z-fr"))
        tight = store.add(Tenant("tight", "TPM 100", "z-fr", rpm=10, tpm=100))
    for tenant in ("sdk", "tight"):
        Ledger.open(ledger).grant(tenant, 10**6, None)
    with serve_app(emu.app()) as emu_url:
        cfg = tmp / "gw.yaml"
        cfg.write_text(f"plan: {plan}\nledger: {ledger}\nupstreams: {{default_url: '{emu_url}/{{backend}}/v1'}}\n",
                       encoding="utf-8")
        gw, start, stop = build_gateway(load_gateway_config(cfg), "sdk")
        with serve_app(create_app(gw, start, stop)) as url:
            yield url + "/v1", key, poor, tight


@pytest.fixture
def client(gateway: tuple[str, str, str, str]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway[0], api_key=gateway[1], max_retries=0) as c:
        yield c


def test_chat_completion_plain_and_streamed(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="qwen3-8b", messages=[{"role": "user", "content": "Bonjour"}], max_tokens=4)
    out = raw.parse()
    assert out.choices[0].message.content and out.usage is not None and out.usage.completion_tokens == 4
    assert raw.headers["x-sovcloud-region"] in ("de-fra", "fr-par")
    assert raw.headers["x-sovcloud-policy"] == "origin=z-fr; rule=eu; decision=ok"
    with client.chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "Salut"}],
                                        max_tokens=5, stream=True, stream_options={"include_usage": True}) as stream:
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    with client.chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "Salut"}],
                                        stream=True) as stream:
        assert all(c.usage is None for c in stream)  # not asked for: not sent


def test_omni_parts_completions_embeddings_and_models(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model="qwen3-8b", max_tokens=2, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]}])
    assert out.choices[0].message.content
    comp = client.completions.create(model="qwen3-8b", prompt="Once upon a time", max_tokens=3)
    assert comp.choices[0].text and comp.usage is not None and comp.usage.completion_tokens == 3
    with client.completions.create(model="qwen3-8b", prompt=[1, 2, 3], max_tokens=3, stream=True) as stream:
        assert "".join(c.choices[0].text for c in stream if c.choices)
    emb = client.embeddings.create(model="qwen3-8b", input=["a", "b"])
    assert len(emb.data) == 2 and emb.usage.prompt_tokens > 0
    assert [m.id for m in client.models.list()] == ["qwen3-8b"]


def test_sdk_errors_map_to_the_right_exceptions(gateway: tuple[str, str, str, str], client: openai.OpenAI) -> None:
    with openai.OpenAI(base_url=gateway[0], api_key="sk-sov-not-a-key", max_retries=0) as bad, \
            pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
        bad.models.list()
    with pytest.raises(openai.NotFoundError, match="gpt-5"):
        client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "x"}], max_tokens=-1)
    # default retries: a 402 is not retried
    with openai.OpenAI(base_url=gateway[0], api_key=gateway[2]) as poor, pytest.raises(openai.APIStatusError) as info:
        poor.chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 402 and info.value.code == "insufficient_quota"


def test_retrieve_a_model(client: openai.OpenAI) -> None:
    model = client.models.retrieve("qwen3-8b")
    assert model.id == "qwen3-8b" and model.object == "model" and model.owned_by == "sovcloud"
    with pytest.raises(openai.NotFoundError, match="gpt-5") as info:
        client.models.retrieve("gpt-5")
    assert info.value.code == "model_not_found"


def test_a_request_larger_than_the_tpm_is_not_retried(gateway: tuple[str, str, str, str]) -> None:
    with openai.OpenAI(base_url=gateway[0], api_key=gateway[3]) as tight:  # default retries
        raw = tight.chat.completions.with_raw_response.create(
            model="qwen3-8b", messages=[{"role": "user", "content": "x"}], max_tokens=4)
        assert raw.headers["x-ratelimit-limit-tokens"] == "100" and raw.headers["x-ratelimit-limit-requests"] == "10"
        with pytest.raises(openai.BadRequestError, match="100 tokens per minute") as info:
            tight.chat.completions.create(model="qwen3-8b", messages=[{"role": "user", "content": "x"}],
                                          max_tokens=200)
    assert info.value.code == "request_too_large"


def test_responses_plain_and_streamed(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(model="qwen3-8b", instructions="Be brief.", input="Bonjour",
                                                    max_output_tokens=4)
    out = raw.parse()
    assert out.output_text and out.usage is not None and out.usage.output_tokens == 4
    assert out.usage.total_tokens == out.usage.input_tokens + 4 and out.id.startswith("resp_")
    # the emulator always generates max_tokens: cut there, as OpenAI says it
    assert out.status == "incomplete" and out.incomplete_details is not None
    assert out.incomplete_details.reason == "max_output_tokens"
    assert raw.headers["x-sovcloud-policy"] == "origin=z-fr; rule=eu; decision=ok"
    with client.responses.create(model="qwen3-8b", max_output_tokens=5, stream=True, input=[
            {"role": "user", "content": [{"type": "input_text", "text": "Salut"}]}]) as stream:
        events = list(stream)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1]
    assert final.type == "response.incomplete" and final.response.output_text == text and text
    assert final.response.usage is not None and final.response.usage.output_tokens == 5
    with client.responses.stream(model="qwen3-8b", input="Salut", max_output_tokens=3) as helper:  # the accumulator
        deltas = [e for e in helper if e.type == "response.output_text.delta"]
    assert len(deltas) == 3 and deltas[-1].snapshot == "".join(e.delta for e in deltas)
    with pytest.raises(openai.BadRequestError, match="previous_response_id") as info:
        client.responses.create(model="qwen3-8b", input="x", previous_response_id="resp_1")
    assert info.value.code == "unsupported_parameter"


def test_audio_speech_and_transcriptions_pass_through_and_are_metered(gateway: tuple[str, str, str, str]) -> None:
    url, key, _, _ = gateway
    with openai.OpenAI(base_url=url, api_key=key, max_retries=0) as client:
        speech = client.audio.speech.with_raw_response.create(model="qwen3-8b", voice="alloy", input="Bonjour " * 8,
                                                              response_format="wav")
        audio = speech.content
        assert audio.startswith(b"RIFF") and speech.headers["content-type"] == "audio/wav"
        assert speech.headers["x-sovcloud-policy"] == "origin=z-fr; rule=eu; decision=ok"
        raw = client.audio.transcriptions.with_raw_response.create(model="qwen3-8b", file=("a.wav", audio))
        text = raw.parse()
        assert text.text == "emulated transcript of the audio"
        assert raw.headers["x-sovcloud-region"] in ("de-fra", "fr-par")
        with pytest.raises(openai.BadRequestError) as err:
            client.audio.speech.create(model="qwen3-8b", voice="alloy", input="x" * 5000)
        assert err.value.body is not None and "4,096" in str(err.value.body)
