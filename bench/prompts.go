package bench

// What the benchmark sends the server: the chat transcripts of the short and
// the 16 KB prompt. The model it serves by default (deployed size, random
// weights) comes from harness.WriteSyntheticModel.

import (
	"fmt"
	"strings"
)

// message is one chat message of a request body.
type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// formattedLen is the byte length of the chat transcript for msgs (each
// message "{role}: {content}\n", then the "assistant: " prompt), which is what
// the server checks against MAX_PROMPT_BYTES. Only used for messages that do
// not end in an empty assistant message.
func formattedLen(msgs []message) int {
	n := len("assistant: ")
	for _, m := range msgs {
		n += len(m.Role) + len(": ") + len(m.Content) + 1
	}
	return n
}

// shortPrompt is a one-line question, the common case of the chat widget.
// variant makes the bytes differ between requests.
func shortPrompt(variant int) []message {
	return []message{{Role: "user", Content: fmt.Sprintf("hi niels, what are you working on? (%d)", variant)}}
}

// longPromptBytes is the formatted size of the long prompt: the "16 KB prompt"
// of the original service's measurement.
const longPromptBytes = 16 << 10

var longPromptLines = []string{
	"I have been reading about your work on small language models and I would like to know more.",
	"The model is a byte-level transformer, so every character you type is one token.",
	"Could you explain how the attention heads decide what to look at in a sentence like this one?",
	"Each head scores every earlier position against the newest one and turns the scores into probabilities.",
	"What happens when the conversation gets longer than the context window of the model?",
	"The window is cut again at every step, so the model always sees the most recent bytes only.",
	"That sounds like it would forget the beginning of a long chat. Is that a problem in practice?",
	"For a portfolio assistant it rarely is: most questions are short and refer to the last few lines.",
}

// longPrompt is a transcript of alternating user and assistant turns whose
// formatted size is just under longPromptBytes, ending on a user turn.
// variant changes the text so no two requests are byte-identical.
func longPrompt(variant int) []message {
	var msgs []message
	for turn := 0; ; turn++ {
		role := "user"
		if turn%2 == 1 {
			role = "assistant"
		}
		var b strings.Builder
		for k := range 3 {
			b.WriteString(longPromptLines[(turn*3+k+variant)%len(longPromptLines)])
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "(turn %d.%d)", variant, turn)
		next := append(msgs, message{Role: role, Content: b.String()})
		if formattedLen(next) > longPromptBytes {
			break
		}
		msgs = next
	}
	// End on a user turn, as a real request would, and pad that turn so the
	// transcript is as close to the target size as the text allows.
	if msgs[len(msgs)-1].Role != "user" {
		msgs = msgs[:len(msgs)-1]
	}
	last := &msgs[len(msgs)-1]
	if pad := longPromptBytes - formattedLen(msgs); pad > 0 {
		filler := strings.Repeat(" "+longPromptLines[variant%len(longPromptLines)], pad/len(longPromptLines[0])+2)
		last.Content += filler[:pad]
	}
	return msgs
}

// pastTPrompt is a transcript longer than the model's context by at least
// half a window, so that every token of the stream is generated past T and
// the window rule (window_hop) decides what each one costs.
func pastTPrompt(context int) func(variant int) []message {
	return func(variant int) []message {
		var msgs []message
		for turn := 0; formattedLen(msgs) < context+context/2; turn++ {
			role := "user"
			if turn%2 == 1 {
				role = "assistant"
			}
			line := longPromptLines[(turn+variant)%len(longPromptLines)]
			msgs = append(msgs, message{Role: role, Content: fmt.Sprintf("%s (%d.%d)", line, variant, turn)})
		}
		return msgs
	}
}
