package transcript

import (
	"fmt"
	"strings"
)

// Step is one recorded call of a transcript: what was called (and where in
// the scenario) and what came back.
type Step struct {
	Label string
	Out   string
}

// Format lists steps one after the other, each output indented under its
// label.
func Format(steps []Step) string {
	var b strings.Builder
	for i, s := range steps {
		fmt.Fprintf(&b, "step %d: %s\n%s", i+1, s.Label, Indent(s.Out, "    "))
	}
	return b.String()
}

// Diff reports every step whose output differs, as a line diff ("-" etcd,
// "+" rsetcd; see LineDiff for context), or "" when the transcripts are
// identical.
func Diff(want, got []Step, context int) string {
	var b strings.Builder
	n := max(len(want), len(got))
	differing := 0
	for i := 0; i < n; i++ {
		var w, g Step
		if i < len(want) {
			w = want[i]
		}
		if i < len(got) {
			g = got[i]
		}
		if w == g {
			continue
		}
		differing++
		label := w.Label
		if label == "" {
			label = g.Label
		}
		fmt.Fprintf(&b, "--- step %d/%d: %s\n", i+1, n, label)
		b.WriteString(LineDiff(w.Out, g.Out, context))
	}
	if differing == 0 {
		return ""
	}
	return fmt.Sprintf("%d of %d steps differ (- etcd, + rsetcd):\n%s", differing, n, b.String())
}

// Indent puts prefix before every line of s.
func Indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix) + "\n"
}

// AllLines, as the context of LineDiff or Diff, shows every unchanged line.
const AllLines = -1

// LineDiff is a small LCS line diff: " " common, "-" only in a, "+" only in
// b. Only context unchanged lines are shown around a change, the others are
// counted ("... 12 unchanged lines"); with AllLines every line is shown.
func LineDiff(a, b string, context int) string {
	x := strings.Split(strings.TrimRight(a, "\n"), "\n")
	y := strings.Split(strings.TrimRight(b, "\n"), "\n")
	// lcs[i][j] = LCS length of x[i:], y[j:]
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	// Edit script, then print it with context common lines around changes.
	type line struct {
		op   byte
		text string
	}
	var script []line
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			script = append(script, line{' ', x[i]})
			i++
			j++
		case i < len(x) && (j == len(y) || lcs[i+1][j] >= lcs[i][j+1]):
			script = append(script, line{'-', x[i]})
			i++
		default:
			script = append(script, line{'+', y[j]})
			j++
		}
	}
	near := make([]bool, len(script))
	for k, l := range script {
		if context < 0 {
			near[k] = true
		} else if l.op != ' ' {
			for d := max(0, k-context); d <= min(len(script)-1, k+context); d++ {
				near[d] = true
			}
		}
	}
	var out strings.Builder
	for k := 0; k < len(script); k++ {
		if !near[k] {
			n := 0
			for k < len(script) && !near[k] {
				n++
				k++
			}
			k--
			fmt.Fprintf(&out, "    ... %d unchanged lines\n", n)
			continue
		}
		out.WriteString("  " + string(script[k].op) + " " + script[k].text + "\n")
	}
	return out.String()
}
