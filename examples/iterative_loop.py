"""A loop with a switch: the workflow guesses a secret number by bisection.

    barrierflow run examples.iterative_loop:guess_the_number --input 37
    barrierflow run examples.iterative_loop:guess_the_number --input '{"secret": 612, "high": 1000}'
    python -m examples.iterative_loop 37

::

    judge --Verdict--> switch: Case(correct) --> announce
      ^                        Default -------> guesser --Guess--+
      +----------------------------------------------------------+

``judge`` keeps the secret and the attempt count in its *executor state* (``ctx.set_executor_state``), so the
loop survives a checkpoint/restore and runs unchanged on Celery workers, where every process has its own
executor objects. ``guesser`` keeps its bounds the same way. Every guess costs two supersteps; the
switch-case edge group routes each ``Verdict``: a correct one to ``announce``, anything else back to the
guesser.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field

from barrierflow.engine import (
    Case,
    Default,
    Executor,
    WorkflowBuilder,
    WorkflowContext,
    executor,
    handler,
    register_type,
    register_workflow,
)


@register_type(name="examples.iterative_loop.Game")
@dataclass(slots=True)
class Game:
    secret: int
    low: int = 1
    high: int = 100


@register_type(name="examples.iterative_loop.Guess")
@dataclass(slots=True)
class Guess:
    value: int


@register_type(name="examples.iterative_loop.Verdict")
@dataclass(slots=True)
class Verdict:
    """``result`` is ``"start"``, ``"higher"``, ``"lower"`` or ``"correct"``."""

    result: str
    guess: int | None
    attempts: int
    low: int
    high: int


@register_type(name="examples.iterative_loop.Solved")
@dataclass(slots=True)
class Solved:
    secret: int
    attempts: int
    guesses: list[int] = field(default_factory=list)


class Judge(Executor):
    """Knows the secret; answers every guess with a ``Verdict``."""

    @handler
    async def on_game(self, game: Game, ctx: WorkflowContext[Verdict]) -> None:
        if game.low > game.high or not game.low <= game.secret <= game.high:
            raise ValueError(f"the secret {game.secret} must lie in [{game.low}, {game.high}]")
        ctx.set_executor_state({"secret": game.secret, "attempts": 0, "guesses": []})
        await ctx.send_message(Verdict("start", None, 0, game.low, game.high))

    @handler
    async def on_secret(self, secret: int, ctx: WorkflowContext[Verdict]) -> None:
        await self.on_game(Game(secret), ctx)

    @handler
    async def on_settings(self, settings: dict, ctx: WorkflowContext[Verdict]) -> None:
        try:
            game = Game(int(settings["secret"]), int(settings.get("low", 1)), int(settings.get("high", 100)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f'expected {{"secret": int, "low"?: int, "high"?: int}}, got {settings!r}'
            ) from exc
        await self.on_game(game, ctx)

    @handler
    async def on_guess(self, guess: Guess, ctx: WorkflowContext[Verdict]) -> None:
        state = ctx.get_executor_state()
        state = {**state, "attempts": state["attempts"] + 1, "guesses": [*state["guesses"], guess.value]}
        ctx.set_executor_state(state)
        secret = state["secret"]
        result = "correct" if guess.value == secret else "higher" if guess.value < secret else "lower"
        ctx.set_state("guesses", state["guesses"])
        await ctx.send_message(Verdict(result, guess.value, state["attempts"], 0, 0))


class Guesser(Executor):
    """Bisects: remembers the interval still possible and guesses its middle."""

    @handler
    async def on_verdict(self, verdict: Verdict, ctx: WorkflowContext[Guess]) -> None:
        if verdict.result == "start":
            low, high = verdict.low, verdict.high
        else:
            low, high = ctx.get_executor_state()
            if verdict.result == "higher":
                low = verdict.guess + 1
            else:
                high = verdict.guess - 1
        ctx.set_executor_state([low, high])
        await ctx.send_message(Guess((low + high) // 2))


@executor(id="announce")
async def announce(verdict: Verdict, ctx: WorkflowContext) -> None:
    await ctx.yield_output(Solved(verdict.guess, verdict.attempts, ctx.get_state("guesses", [])))


def is_correct(verdict: Verdict) -> bool:
    return verdict.result == "correct"


@register_workflow
def guess_the_number() -> WorkflowBuilder:
    judge = Judge(id="judge")
    guesser = Guesser(id="guesser")
    return (
        WorkflowBuilder(name="guess_the_number", start_executor=judge, max_supersteps=200)
        .add_switch_case_edge_group(
            judge, [Case(condition=is_correct, target=announce), Default(target=guesser)]
        )
        .add_edge(guesser, judge)
    )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    secret = int(args[0]) if args else 37
    result = asyncio.run(guess_the_number().build().run(secret))
    solved = result.outputs[0]
    print(f"found {solved.secret} in {solved.attempts} guesses: {solved.guesses}")


if __name__ == "__main__":
    main()
