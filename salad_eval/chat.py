"""Prompt formats: raw (the paper's protocol, the default) or the model's chat template.

``--chat-template`` does what lm-eval's ``--apply_chat_template`` does for a multiple-choice task
with no ``gen_prefix``: the whole context becomes one user message, rendered by the model's own
template with the generation prompt, and the choices lose their target delimiter (lm-eval sets it
to ``""``; here the leading whitespace of each choice, which is that delimiter whenever the task's
delimiter is whitespace). A spoken prompt is rendered the same way with each clip as a marker in
the message text; the clips then sit where their markers land, each in the model's own audio
format. Each model applies its own template, so ``text@base`` uses the text LLM's and
``text@speech``/``speech@speech`` the speech LLM's. A task's description stays at the start of
the user turn (lm-eval sends it as a system message): a prompt does not mark it apart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from salad_eval.errors import SaladError
from salad_eval.prompt import Audio, Prompt, Segment, Text

PROMPT_FORMATS = ("raw", "chat")
_MARKER = "\x00salad-clip-{}\x00"
_MARKERS = re.compile("\x00salad-clip-(\\d+)\x00")


@dataclass(frozen=True)
class ChatFormat:
    """A model's chat template, applied to prompts."""

    template: str
    renderer: object  # a tokenizer or processor with ``apply_chat_template``

    @classmethod
    def of(cls, tokenizer, name: str, processor=None) -> ChatFormat:
        """The processor's template if it has one, else the tokenizer's; an error if neither."""
        for owner in (processor, tokenizer):
            template = getattr(owner, "chat_template", None)
            if isinstance(template, str) and template:
                return cls(template, tokenizer)
        raise SaladError(
            f"--chat-template: {name} has no chat template; drop --chat-template "
            "(raw prompts) or use a model that ships one"
        )

    def render(self, content: str) -> str:
        """``content`` as one user message, with the template's generation prompt."""
        return self.renderer.apply_chat_template(
            [{"role": "user", "content": content}],
            chat_template=self.template,
            tokenize=False,
            add_generation_prompt=True,
        )

    def apply(self, prompt: Prompt, choices: Sequence[str]) -> tuple[Prompt, tuple[str, ...]]:
        """The prompt as one user turn with the generation prompt; choices without delimiter."""
        return self.render_turns([("user", prompt)]), tuple(choice.lstrip() for choice in choices)

    def render_turns(
        self, turns: Sequence[tuple[str, Prompt]], add_generation_prompt: bool = True
    ) -> Prompt:
        """A conversation, each turn a role and its segments, as the template renders it, each
        clip where its marker lands: ``apply``'s one user turn, or a served chat's messages
        (``salad_eval.serve``), roles and system turns kept."""
        clips = [seg for _, prompt in turns for seg in prompt if isinstance(seg, Audio)]
        messages, n = [], 0
        for role, prompt in turns:
            content = []
            for seg in prompt:
                if isinstance(seg, Audio):
                    content.append(_MARKER.format(n))
                    n += 1
                else:
                    content.append(seg.text)
            messages.append({"role": role, "content": "".join(content)})
        rendered = self.renderer.apply_chat_template(
            messages,
            chat_template=self.template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
        out: list[Segment] = []
        pos = 0
        for match in _MARKERS.finditer(rendered):
            if int(match.group(1)) >= len(clips):  # text that spells a marker
                raise SaladError("a prompt's text spells a clip marker of the chat rendering")
            if match.start() > pos:
                out.append(Text(rendered[pos : match.start()]))
            out.append(clips[int(match.group(1))])
            pos = match.end()
        if pos < len(rendered):
            out.append(Text(rendered[pos:]))
        if sum(isinstance(seg, Audio) for seg in out) != len(clips):
            raise SaladError("the chat template dropped or repeated a clip of the prompt")
        return tuple(out)
