"""Aptitude and re-ranker surfaces of the live service, on a small real import."""

import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from profiling.embedding_cache import CachedEmbedder
from profiling.model_sat import ModelSatConfig
from service.registry.aptitude import build_test
from service.registry.checkpoints import activate, evaluate_checkpoint, train_checkpoint, training_data
from service.registry.importer import import_data
from service.runtime import Runtime, upgrade_database
from service.store.orm import ProbabilityCalibration
from service.store.readers import current_test, get_checkpoint
from service.store.vector_store import VectorStore
from tests.conftest import ADMIN, ThrowawayDatabases, make_settings, shared_family, small_family

FAST = ModelSatConfig(epochs=2, hidden=32, model_dim=16)


def _with_aptitude_test(
    databases: ThrowawayDatabases, embedder: CachedEmbedder, store: VectorStore, tmp_path: Path
) -> Runtime:
    """A runtime on a database of its own, with a small zeroeval import and an aptitude test built from it."""
    url = databases.new()
    upgrade_database(url)
    runtime = Runtime(make_settings(tmp_path, database_url=url), embedder=embedder, store=store)
    family = small_family(tmp_path, shared_family("zeroeval"), 240)
    with runtime.transaction() as session:
        import_data(session, runtime.store, runtime.embedder, runtime.settings, family, progress=False)
        build_test(session, runtime.store)
    return runtime


@pytest.fixture
def trained(databases: ThrowawayDatabases, embedder: CachedEmbedder, store: VectorStore, tmp_path: Path) -> Runtime:
    """A database of its own: the service's checkpoint watcher queries it from another thread, which the shared
    single-connection test transaction cannot serve."""
    runtime = _with_aptitude_test(databases, embedder, store, tmp_path)
    with runtime.transaction() as session:
        for _ in range(2):
            train_checkpoint(session, runtime.store, runtime.embedder, runtime.settings, FAST)
    return runtime


def test_aptitude_test_is_served_for_running_a_new_model(trained: Runtime) -> None:
    runtime = trained
    from service.app import create_app

    with TestClient(create_app(runtime=runtime)) as client:
        body = client.get("/v1/aptitude").json()
    assert body["version"] == 1
    assert body["tasks"] and all(task["description"] for task in body["tasks"])
    items = [item for task in body["tasks"] for item in task["items"]]
    assert all(item["text"] for item in items)
    assert len({item["id"] for item in items}) == len(items)


def test_activation_switches_the_live_reranker(trained: Runtime) -> None:
    runtime = trained
    runtime.settings.refresh_interval_s = 0.2
    from service.app import create_app

    with TestClient(create_app(runtime=runtime)) as client:
        ready = client.get("/readyz", headers=ADMIN).json()
        assert ready["reranker_version"] is None
        assert any("re-ranker" in w for w in ready["warnings"])
        assert client.post("/v1/route", json={"query": "What is 12 * 7?"}).json()["reranker_version"] is None

        assert client.post("/v1/reranker/activate", json={"version": 1}, headers=ADMIN).status_code == 200
        assert client.get("/readyz").json()["reranker_version"] == 1
        routed = client.post("/v1/route", json={"query": "What is 12 * 7?", "explain": True}).json()
        assert routed["reranker_version"] == 1
        assert routed["contributions"][routed["model"]]["reranker"] != 0  # the scorer's centred correction

        # activated elsewhere (the CLI writes the database): the running service follows
        with runtime.transaction() as session:
            activate(session, 2)
        deadline = time.monotonic() + 10
        while client.get("/readyz").json()["reranker_version"] != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/readyz").json()["reranker_version"] == 2
        versions = [c["version"] for c in client.get("/v1/reranker").json() if c["active"]]
        assert versions == [2]

        assert client.post("/v1/reranker/activate", json={"version": 99}, headers=ADMIN).status_code == 404
        assert client.post("/v1/reranker/activate", json={"version": 1}).status_code == 401


def test_a_new_model_is_onboarded_by_its_aptitude_answers(trained: Runtime) -> None:
    runtime = trained
    from service.app import create_app

    with TestClient(create_app(runtime=runtime)) as client:
        client.post("/v1/reranker/activate", json={"version": 1}, headers=ADMIN)
        items = [item["id"] for task in client.get("/v1/aptitude").json()["tasks"] for item in task["items"]]
        body = {"name": "fresh-model", "input_usd_per_mtok": 0.01, "output_usd_per_mtok": 0.01}
        assert client.post("/v1/models", json=body, headers=ADMIN).status_code == 201

        answers = {"answers": [{"item_id": i, "score": 1} for i in items]}
        result = client.post("/v1/models/fresh-model/aptitude", json=answers, headers=ADMIN)
        assert result.status_code == 200, result.text
        assert result.json()["answered"] == len(items)
        assert all(t["accuracy"] == 1.0 for t in result.json()["aptitude"])
        assert client.get("/v1/models/fresh-model").json()["evaluations"] == len(items)

        # right on every item and nearly free: it should now be the choice, on its stage-1 estimate
        routed = client.post(
            "/v1/route",
            json={"query": "Natalia sold 48 clips. How many in total?", "lambda": 0.1},
        ).json()
        assert routed["model"] == "fresh-model"
        assert routed["reranker_version"] == 1

        bad = client.post(
            "/v1/models/fresh-model/aptitude", json={"answers": [{"item_id": -5, "score": 1}]}, headers=ADMIN
        )
        assert bad.status_code == 422
        assert "answers[0].item_id" in bad.json()["detail"]
        stale = client.post("/v1/models/fresh-model/aptitude", json={"version": 7, **answers}, headers=ADMIN)
        assert stale.status_code == 409


def _first_models_item_scores(runtime: Runtime) -> dict[int, float]:
    """Aptitude item id -> the first imported model's score on it: answers to onboard a twin of that model with."""
    from sqlalchemy import select

    from service.store.orm import AptitudeItem, EvalRecord, LlmModel

    with runtime.sessions() as session:
        original = session.scalars(select(LlmModel).order_by(LlmModel.id)).first()
        assert original is not None
        return dict(
            session.execute(
                select(AptitudeItem.id, EvalRecord.score)
                .join(EvalRecord, EvalRecord.query_id == AptitudeItem.query_id)
                .where(EvalRecord.model_id == original.id)
            ).all()
        )


def test_the_scorer_does_not_guess_for_a_model_it_was_not_trained_on(trained: Runtime) -> None:
    """A twin of a trained model, onboarded from the same aptitude answers, sits at distance 0 from its training
    models; the scorer's zero-shot guess for it still gets no share (it overrated new models in the onboarding
    sweep), while the twin's original keeps its share."""

    from service.app import create_app

    runtime = trained
    runtime.settings.reranker_evidence_pseudo_count = 100.0  # off by default (docs/evaluation.md says why)
    scores = _first_models_item_scores(runtime)
    with TestClient(create_app(runtime=runtime)) as client:
        client.post("/v1/reranker/activate", json={"version": 1}, headers=ADMIN)
        # nearly free, so that its stage-1 utility puts it among the candidates stage 2 re-scores
        body = {"name": "twin", "input_usd_per_mtok": 0.001, "output_usd_per_mtok": 0.001}
        assert client.post("/v1/models", json=body, headers=ADMIN).status_code == 201
        answers = {"answers": [{"item_id": i, "score": score} for i, score in scores.items()]}
        assert client.post("/v1/models/twin/aptitude", json=answers, headers=ADMIN).status_code == 200
        query = {"query": "What is 12 * 7?", "explain": True, "top_n": 100, "lambda": 1.0}
        routed = client.post("/v1/route", json=query).json()
    shares = {model: c["reranker"] for model, c in routed["contributions"].items()}
    assert shares["twin"] == 0.0
    assert any(share != 0.0 for model, share in shares.items() if model != "twin")


def test_checkpoint_evaluation_reports_its_heads_beside_the_scorer(trained: Runtime) -> None:
    with trained.sessions() as session:
        result = evaluate_checkpoint(session, trained.store, trained.settings, 1)
        test = current_test(session)
        assert test is not None
        data = training_data(session, trained.store, test)
        trained_with = get_checkpoint(session, 1).metrics
    assert trained_with["heads"] == len(data.matrix.model_ids)  # every model with records has one
    assert trained_with["heads_validation_top1_accuracy"] == pytest.approx(result["heads_top1_accuracy"])
    validation = data.matrix.outcomes[data.validation_rows]
    assert result["validation_queries"] == len(validation) > 0
    assert 0 <= result["heads_ece"] <= 1
    # each head knows at least its model's rate, so their top pick beats a model picked at random
    assert result["heads_top1_accuracy"] >= float(np.nanmean(np.nanmean(validation, axis=0)))


def test_a_model_known_from_its_items_alone_gets_a_head_but_no_say_in_the_scorer(
    databases: ThrowawayDatabases, embedder: CachedEmbedder, store: VectorStore, tmp_path: Path
) -> None:
    """As the onboarding sweep measures it: the scorer learns from models with ordinary outcomes and scores an
    aptitude-only model zero-shot, while that model's head learns from its item answers."""
    import io

    from sqlalchemy import delete, select

    from profiling.model_sat import ModelSat
    from service.store.orm import AptitudeItem, EvalRecord, LlmModel

    runtime = _with_aptitude_test(databases, embedder, store, tmp_path)
    with runtime.transaction() as session:
        onboarded = session.scalars(select(LlmModel).order_by(LlmModel.id)).first()
        assert onboarded is not None
        items = select(AptitudeItem.query_id)
        session.execute(
            delete(EvalRecord).where(EvalRecord.model_id == onboarded.id, EvalRecord.query_id.not_in(items))
        )
        models = len(session.scalars(select(LlmModel.id)).all())
        item_count = len(session.scalars(select(EvalRecord.id).where(EvalRecord.model_id == onboarded.id)).all())
        checkpoint = train_checkpoint(session, runtime.store, runtime.embedder, runtime.settings, FAST)
        assert checkpoint.weights is not None
        sat = ModelSat.load(io.BytesIO(checkpoint.weights), "cpu")
    assert checkpoint.metrics["models"] == models - 1  # the scorer never trained on the onboarded model
    assert sat.reference_aptitude is not None and len(sat.reference_aptitude) == models - 1
    assert sat.heads is not None
    heads = sat.heads.arranged([str(onboarded.id)])
    assert 0 < heads.records[0] <= item_count  # its head: its item answers outside the validation rows


def _zeroeval_query_ids(runtime: Runtime, subject: str, n: int) -> list[str]:
    from sqlalchemy import select

    from service.store.orm import EvalQuery

    with runtime.sessions() as session:
        return list(
            session.scalars(
                select(EvalQuery.external_id).where(EvalQuery.subject == subject).order_by(EvalQuery.id).limit(n)
            )
        )


def test_a_rest_model_with_strong_evidence_beats_re_ranked_models(trained: Runtime) -> None:
    """A model with no aptitude results competes on its final utility: stage 2 never puts re-ranked models first."""
    from service.app import create_app

    code_ids = _zeroeval_query_ids(trained, "crux", 96)
    assert len(code_ids) == 96
    with TestClient(create_app(runtime=trained)) as client:
        assert client.post("/v1/reranker/activate", json={"version": 1}, headers=ADMIN).status_code == 200
        body = {"name": "code-specialist", "input_usd_per_mtok": 0.01, "output_usd_per_mtok": 0.01}
        assert client.post("/v1/models", json=body, headers=ADMIN).status_code == 201
        evaluations = {"evaluations": [{"benchmark": "zeroeval", "query_id": q, "score": 1} for q in code_ids]}
        posted = client.post("/v1/models/code-specialist/evaluations", json=evaluations, headers=ADMIN)
        assert posted.status_code == 200, posted.text
        query = "What does f([3, 1, 2]) return?\ndef f(xs):\n    return sorted(xs)[::-1]"
        routed = client.post("/v1/route", json={"query": query, "lambda": 0.0, "explain": True}).json()
    assert routed["reranker_version"] == 1  # stage 2 did re-rank other models ...
    assert routed["model"] == "code-specialist"  # ... and the better-evidenced model still won
    scores = [a["score"] for a in routed["alternatives"]]
    assert scores == sorted(scores, reverse=True)
    contributions = routed["contributions"]
    assert contributions["code-specialist"]["reranker"] == 0  # no aptitude results: stage 1 only
    assert contributions["code-specialist"]["head"] == 0  # no checkpoint head, and all right: none fitted either
    assert any(c["head"] > 0 for c in contributions.values())  # while the checkpoint's models have theirs
    assert any(c["reranker"] != 0 for c in contributions.values())  # competing against re-ranked models


def test_a_model_with_one_record_is_not_confident(trained: Runtime) -> None:
    from service.app import create_app

    [query_id] = _zeroeval_query_ids(trained, "crux", 1)
    with TestClient(create_app(runtime=trained)) as client:
        client.post("/v1/models", json={"name": "lucky-once", "input_usd_per_mtok": 0.01}, headers=ADMIN)
        one = {"evaluations": [{"benchmark": "zeroeval", "query_id": query_id, "score": 1}]}
        assert client.post("/v1/models/lucky-once/evaluations", json=one, headers=ADMIN).status_code == 200
        for query in ("What is 12 * 7?", "Which treaty ended the Thirty Years War?"):
            routed = client.post("/v1/route", json={"query": query, "candidates": ["lucky-once"]}).json()
            assert routed["alternatives"][0]["p_correct"] < 0.8, routed["alternatives"]


def test_presets_are_calibrated_monotone_and_used_by_default(trained: Runtime) -> None:
    from service.app import create_app
    from service.jobs.calibrate import CalibrationError, calibrate_presets
    from service.registry.checkpoints import activate

    with trained.transaction() as session:
        activate(session, 1)
        trained.router.reload(session, trained.store)
        with pytest.raises(CalibrationError, match="validation queries"):
            calibrate_presets(session, trained.store, trained.router, min_queries=10_000)
        chosen = calibrate_presets(session, trained.store, trained.router, min_queries=10)
    with trained.sessions() as session:
        fitted = session.get(ProbabilityCalibration, "final_p_correct")
        assert fitted is not None and fitted.validation_pairs > 0 and fitted.scale > 0
    costs = [chosen[name].cost_per_query for name in ("economy", "balanced", "quality")]
    assert costs == sorted(costs)
    assert chosen["quality"].accuracy >= chosen["balanced"].accuracy - 1e-9 >= chosen["economy"].accuracy - 1e-9
    assert chosen["quality"].accuracy - chosen["balanced"].accuracy <= 0.01 + 1e-9

    with TestClient(create_app(runtime=trained)) as client:
        listed = {p["name"]: p for p in client.get("/v1/presets").json()}
        assert set(listed) == {"quality", "balanced", "economy"}
        query = {"query": "What is 12 * 7?"}
        default = client.post("/v1/route", json=query).json()
        assert default["preset"] == "balanced" and default["lambda"] == listed["balanced"]["lambda"]
        economy = client.post("/v1/route", json={**query, "preset": "economy"}).json()
        assert economy["preset"] == "economy" and economy["lambda"] == listed["economy"]["lambda"]
        explained = client.post("/v1/route", json={**query, "explain": True}).json()
        best = explained["alternatives"][0]
        parts = explained["contributions"][best["model"]]
        assert parts["calibration"] != 0.0  # P(correct) is calibrated now, and the explanation says by how much
        assert parts["head"] > 0  # the active checkpoint's head for this model weighs in
        total = sum(parts["dimensions"].values()) + parts["knn"] + parts["head"] + parts["reranker"] + parts["cost"]
        assert total + parts["calibration"] == pytest.approx(best["score"], abs=1e-6)
        explicit = client.post("/v1/route", json={**query, "lambda": 0.25}).json()
        assert explicit["preset"] is None and explicit["lambda"] == 0.25
        both = client.post("/v1/route", json={**query, "lambda": 1, "preset": "economy"})
        assert both.status_code == 422 and "lambda or preset" in both.json()["detail"]
        unknown = client.post("/v1/route", json={**query, "preset": "cheapest"})
        assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "preset"


def test_a_named_preset_needs_calibration(trained: Runtime) -> None:
    from service.app import create_app

    with TestClient(create_app(runtime=trained)) as client:
        assert client.get("/v1/presets").json() == []
        routed = client.post("/v1/route", json={"query": "What is 12 * 7?"}).json()
        assert routed["preset"] is None and routed["lambda"] == 0.0
        refused = client.post("/v1/route", json={"query": "What is 12 * 7?", "preset": "economy"})
        assert refused.status_code == 422 and "presets calibrate" in refused.json()["detail"]


def test_the_bench_tiles_the_heads_with_the_model_pool(trained: Runtime) -> None:
    """`capprof bench` times scoring on the real pool tiled to thousands of models: every tiled model must keep the
    head (and share) of the model it copies, or scoring with an active checkpoint cannot run."""
    from service.jobs.bench import scaled_state

    with trained.transaction() as session:
        activate(session, 1)
    trained.reload_router()
    state = trained.router.state
    assert state.stage2 is not None and state.stage2.heads is not None
    n = len(state.models)
    tiled = scaled_state(state, 3 * n + 1)
    vectors = trained.embedder.embed(["What is 12 * 7?", "Sort a list of tuples by their second item in Python."])
    chars = np.array([14.0, 52.0])
    real = trained.router.estimate(vectors, chars, state=state)
    scaled = trained.router.estimate(vectors, chars, state=tiled)  # the heads blended into every tiled column
    assert real.p_heads is not None and scaled.p_heads is not None
    copies = np.arange(3 * n + 1) % n
    np.testing.assert_allclose(scaled.p_heads, real.p_heads[:, copies])
    assert tiled.stage2 is not None and tiled.stage2.head_shares is not None
    assert state.stage2.head_shares is not None
    np.testing.assert_allclose(tiled.stage2.head_shares, state.stage2.head_shares[copies])


def test_a_model_onboarded_after_the_checkpoint_routes_with_a_head_fitted_on_its_answers(trained: Runtime) -> None:
    """A model registered after the checkpoint has no head of the checkpoint's; routing fits one on its records
    (here a twin's aptitude answers) as a checkpoint fits heads, refits it as records arrive, and keeps it across
    retraining, which learns from imported and API records only."""

    from service.app import create_app

    runtime = trained
    scores = _first_models_item_scores(runtime)
    assert 0 < sum(scores.values()) < len(scores)  # right on some items, wrong on others: a head has a slope
    queries = ["What is 12 * 7?", "What does f(x) return for x = 3 if f = lambda x: x * x + 1?", "Solve 3x + 5 = 20."]
    vectors = runtime.embedder.embed(queries)
    with TestClient(create_app(runtime=runtime)) as client:
        client.post("/v1/reranker/activate", json={"version": 1}, headers=ADMIN)
        body = {"name": "twin", "input_usd_per_mtok": 0.001, "output_usd_per_mtok": 0.001}
        assert client.post("/v1/models", json=body, headers=ADMIN).status_code == 201
        half = list(scores.items())[: len(scores) // 2]
        answers = {"answers": [{"item_id": i, "score": score} for i, score in half]}
        assert client.post("/v1/models/twin/aptitude", json=answers, headers=ADMIN).status_code == 200
        runtime.refresh_router()
        state = runtime.router.state
        twin = int(np.flatnonzero(np.array(state.models.names) == "twin")[0])
        assert state.stage2 is not None and state.stage2.heads is not None and state.stage2.head_shares is not None
        assert state.stage2.checkpoint_heads is not None and state.stage2.checkpoint_heads.records[twin] == 0
        assert state.stage2.heads.records[twin] == len(half)
        assert state.stage2.head_shares[twin] > 0
        # the rest of its answers arrive: the head is refitted on all of them
        rest = {"answers": [{"item_id": i, "score": score} for i, score in scores.items()]}
        assert client.post("/v1/models/twin/aptitude", json=rest, headers=ADMIN).status_code == 200
        runtime.refresh_router()
        state = runtime.router.state
        assert state.stage2 is not None and state.stage2.heads is not None
        assert state.stage2.heads.records[twin] == len(scores)
        interim = state.stage2.heads.predict(vectors)[:, twin]
        explained = client.post("/v1/route", json={"query": queries[0], "explain": True, "top_n": 100}).json()
        assert explained["contributions"]["twin"]["head"] is not None
        with runtime.transaction() as session:
            train_checkpoint(session, runtime.store, runtime.embedder, runtime.settings, FAST)
            activate(session, 3)
        runtime.reload_router()
        state = runtime.router.state
    assert state.stage2 is not None and state.stage2.checkpoint_heads is not None
    # aptitude answers are not checkpoint training data (imported and API records are): the retrained checkpoint has
    # no head for it either, and routing keeps fitting the same one
    assert state.stage2.checkpoint_heads.records[twin] == 0
    assert state.stage2.heads is not None and state.stage2.heads.records[twin] == len(scores)
    np.testing.assert_allclose(state.stage2.heads.predict(vectors)[:, twin], interim, atol=1e-6)
    assert np.ptp(interim) > 0.01  # a head that reads the query, not a constant


def test_evaluations_posted_for_a_model_without_a_checkpoint_head_refit_its_head(trained: Runtime) -> None:
    """A refresh that brings only evaluation records keeps the loaded scorer but refits the heads routing fills in."""
    from sqlalchemy import select

    from service.app import create_app
    from service.store.orm import EvalQuery

    ids = _zeroeval_query_ids(trained, "crux", 80)
    right, wrong = ids[:40], ids[40:]
    with TestClient(create_app(runtime=trained)) as client:
        assert client.post("/v1/reranker/activate", json={"version": 1}, headers=ADMIN).status_code == 200
        body = {"name": "late-model", "input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.1}
        assert client.post("/v1/models", json=body, headers=ADMIN).status_code == 201
        trained.refresh_router()
        column = list(trained.router.state.models.names).index("late-model")
        loaded = trained.router.state.stage2
        assert loaded is not None and loaded.heads is not None and loaded.heads.records[column] == 0

        def post(ids: list[str], score: int) -> None:
            evaluations = {"evaluations": [{"benchmark": "zeroeval", "query_id": q, "score": score} for q in ids]}
            assert client.post("/v1/models/late-model/evaluations", json=evaluations, headers=ADMIN).status_code == 200

        post(right[:20], 1)
        post(wrong[:20], 0)
        trained.refresh_router()
        stage2 = trained.router.state.stage2
        assert stage2 is not None and stage2.scorer is loaded.scorer  # the same loaded checkpoint, not reloaded
        assert stage2.heads is not None and stage2.heads.records[column] == 40
        post(right[20:], 1)
        post(wrong[20:], 0)
        trained.refresh_router()
        stage2 = trained.router.state.stage2
        assert stage2 is not None and stage2.heads is not None and stage2.heads.records[column] == 80
    with trained.sessions() as session:
        texts = dict(session.execute(select(EvalQuery.external_id, EvalQuery.text)).all())
    p = stage2.heads.predict(trained.embedder.embed([texts[q] for q in ids]))[:, column]
    assert p[:40].mean() > p[40:].mean() + 0.02  # a head with a slope: higher on the queries it got right
