"""The console in a real headless browser (Debian's chromium driven by Playwright), against
a real worker, tansu broker and redis-server.

Alerts appear in the open page as the worker publishes them; an analyst logs in with a
token, opens an alert (reasons, features, the customer's recent transactions) and marks it
fraud: a label.v1 with label_time = now is on the labels topic, the audit log names the
analyst, and a later transaction at that terminal is scored with the label in its terminal
risk, while one at a terminal marked genuine is not. Requests without a valid token get 401.

Screenshots go to the test's temporary folder, or to ``$CONSOLE_SCREENSHOTS_DIR`` when set
(docs/screenshots/ was made so).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path

import aiohttp
import pytest
import redis
from aiokafka import AIOKafkaProducer
from playwright.async_api import Browser, Page, async_playwright

from stream_app.console.app import running_console
from stream_app.console.decisions import AuditLog
from stream_app.contracts import (
    Transaction,
    alert_id,
    decode_alert,
    decode_label,
    encode_transaction,
)
from stream_app.local_services import free_port
from stream_app.settings import Settings
from tests.integration.worker_support import (
    bundle_alerting_on_all,
    counter_value,
    create_topics,
    read_all,
    replay_history,
    running_worker,
    small_history,
    wait_for,
    worker_settings,
)
from tests.secrets import CONSOLE_TOKEN, WRONG_CONSOLE_TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.train]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_S = 30
RISK = "TERMINAL_ID_RISK_1DAY_WINDOW"
XSS_ID = '<img src=x onerror="document.title=1">'


def _tx(tx_id: str, customer: str, terminal: str, at: dt.datetime, amount: str) -> bytes:
    return encode_transaction(Transaction(tx_id, customer, terminal, amount, "EUR", at))


async def _produce(settings: Settings, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()


async def _rows(page: Page) -> int:
    return await page.locator("#alerts tbody tr[data-alert-id]").count()


async def _expect_401(url: str, token: str) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/static/console.js", "/api/alerts", "/api/metrics", "/nowhere"):
            async with http.get(url + path.lstrip("/")) as response:
                assert response.status == 401, path
                assert token not in await response.text()
        wrong = {"Authorization": "Bearer " + "x" * len(token)}
        async with http.get(url + "api/alerts", headers=wrong) as response:
            assert response.status == 401
        async with http.post(url + "api/alerts/x/decision", json={"decision": "fraud"}) as response:
            assert response.status == 401
        good = {"Authorization": f"Bearer {token}"}
        async with http.get(url + "api/alerts", headers=good) as response:
            assert response.status == 200


async def _decide(page: Page, tx_alert: str, button: str, expected: str) -> dt.datetime:
    await page.click(f"tr[data-alert-id='{tx_alert}']")
    await page.wait_for_function(
        "id => document.getElementById('d-id').textContent === id", arg=tx_alert
    )
    before = dt.datetime.now(dt.UTC)
    await page.click(button)
    await page.wait_for_function(
        "text => document.getElementById('d-outcome').textContent === text", arg=expected
    )
    return before


def test_the_console_in_a_browser(
    kafka_bootstrap: str, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    bundle = bundle_alerting_on_all()
    version = bundle.model_version
    token = CONSOLE_TOKEN
    settings = worker_settings(kafka_bootstrap, redis_url, publish_scores=True)
    console_settings = settings.replace(
        console_tokens=f"# analysts\nalice:{token}\n",
        console_port=free_port(),
        console_audit_log=str(tmp_path / "audit.jsonl"),
    )
    shots = Path(os.environ.get("CONSOLE_SCREENSHOTS_DIR") or tmp_path)
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    t0 = start - dt.timedelta(days=7, hours=12)  # in the 1-day delayed window of "now"
    earlier = [
        ("c1", _tx(f"h{i}", "c1", "k1", t0 - dt.timedelta(days=3 - i), f"{20 + i}.50"))
        for i in range(3)
    ]
    suspects = [
        ("c1", _tx("f1", "c1", "k9", t0, "310.00")),
        ("c2", _tx("g1", "c2", "k8", t0 + dt.timedelta(seconds=1), "45.10")),
        (XSS_ID, _tx("x1", XSS_ID, "k7", t0 + dt.timedelta(seconds=2), "1.00")),
    ]

    async def scenario(browser: Browser) -> dict[str, object]:
        topics = await create_topics(settings)
        found: dict[str, object] = {}
        async with (
            running_worker(settings, bundle) as app,
            running_console(console_settings) as console,
        ):
            await _expect_401(console.url, token)
            page = await browser.new_page(viewport={"width": 1500, "height": 900})
            response = await page.goto(console.url)
            assert response is not None and response.status == 401
            await page.fill("#token", WRONG_CONSOLE_TOKEN)
            await page.click("button[type=submit]")
            assert await page.locator("p.error").text_content() == "That token is not valid."
            await page.fill("#token", token)
            await page.click("button[type=submit]")
            await page.wait_for_selector("#alerts")
            cookie = (await page.context.cookies())[0]
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert token not in cookie["value"]
            assert await _rows(page) == 0

            # alerts appear live in the open page
            history = small_history()
            await replay_history(history, settings)
            await _produce(settings, topics.transactions, earlier + suspects)
            expected = len(history) + len(earlier) + len(suspects)
            await wait_for(
                lambda: counter_value(app, "fraudstream_alerts_out_total") >= expected,
                TIMEOUT_S, "the alerts",
            )  # fmt: skip
            await page.wait_for_function(
                "n => document.querySelectorAll('#alerts tbody tr[data-alert-id]').length >= n",
                arg=200, timeout=TIMEOUT_S * 1000,
            )  # fmt: skip
            await page.wait_for_function(
                "() => document.getElementById('f-throughput').textContent !== 'n/a'",
                timeout=TIMEOUT_S * 1000,
            )  # fmt: skip
            found["xss_cell"] = await page.locator(
                f"tr[data-alert-id='{alert_id('x1', version)}'] td:nth-child(2)"
            ).text_content()
            found["injected"] = await page.locator("#alerts img").count()
            found["title"] = await page.title()
            await page.screenshot(path=str(shots / "console-alerts.png"))

            # filters: customer c1 shows its four alerts only
            await page.fill("input[name=customer]", "c1")
            await page.click("#filters button[type=submit]")
            await page.wait_for_function(
                "() => document.querySelectorAll('#alerts tbody tr[data-alert-id]').length === 4"
            )
            await page.click("#filters button[type=reset]")

            # one alert's detail, then the decisions
            fraud_at = await _decide(
                page, alert_id("f1", version), "#d-fraud", "fraud by alice"
            )
            found["reasons"] = await page.locator("#d-reasons tbody tr").count()
            found["features"] = await page.locator("#d-features tbody tr").count()
            found["recent"] = await page.locator(
                "#d-recent tbody tr td:nth-child(2)"
            ).all_text_contents()
            await page.screenshot(path=str(shots / "console-alert-detail.png"), full_page=True)
            await _decide(page, alert_id("g1", version), "#d-genuine", "genuine by alice")
            found["decided"] = (fraud_at, dt.datetime.now(dt.UTC))

            # later transactions at both terminals, after the labels' time
            later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
            await _produce(settings, topics.transactions, [
                ("c3", _tx("n1", "c3", "k9", later, "12.00")),
                ("c4", _tx("n2", "c4", "k8", later, "12.00")),
            ])  # fmt: skip
            await wait_for(
                lambda: counter_value(app, "fraudstream_alerts_out_total") >= expected + 2,
                TIMEOUT_S, "the later alerts",
            )  # fmt: skip
            await page.wait_for_selector(f"tr[data-alert-id='{alert_id('n1', version)}']")
        found["labels"] = [r.value for r in await read_all(kafka_bootstrap, topics.labels)]
        found["alerts"] = [r.value for r in await read_all(kafka_bootstrap, topics.alerts)]
        return found

    async def run() -> dict[str, object]:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS
            )
            try:
                return await scenario(browser)
            finally:
                await browser.close()

    found = asyncio.run(run())
    assert found["xss_cell"] == XSS_ID and found["injected"] == 0
    assert found["title"] == "fraudstream console"
    assert found["reasons"] == 3 and found["features"] == len(bundle.feature_columns)
    assert found["recent"] == ["f1", "h2", "h1", "h0"]

    decided_from, decided_to = found["decided"]  # type: ignore[misc]
    labels = {
        label.transaction_id: label
        for label in map(decode_label, found["labels"])  # type: ignore[call-overload]
        if label.transaction_id in ("f1", "g1")
    }
    assert labels["f1"].is_fraud and not labels["g1"].is_fraud
    assert labels["f1"].event_time == t0 and labels["f1"].terminal_id == "k9"
    assert decided_from <= labels["f1"].label_time <= decided_to
    audit = AuditLog(tmp_path / "audit.jsonl").read()
    assert [(a["analyst"], a["transaction_id"], a["decision"]) for a in audit] == [
        ("alice", "f1", "fraud"), ("alice", "g1", "genuine"),
    ]  # fmt: skip
    assert audit[0]["alert_id"] == alert_id("f1", bundle.model_version)
    assert token not in (tmp_path / "audit.jsonl").read_text()

    alerts = {a.transaction_id: a for a in map(decode_alert, found["alerts"])}  # type: ignore[call-overload]
    assert alerts["f1"].features[RISK] == 0.0
    for later_tx in ("n1", "n2"):
        assert alerts[later_tx].features["TERMINAL_ID_NB_TX_1DAY_WINDOW"] == 1.0
    assert alerts["n1"].features[RISK] == 1.0  # k9: marked fraud in the console
    assert alerts["n2"].features[RISK] == 0.0  # k8: marked genuine
