// MathJax configuration for pymdownx.arithmatex (generic mode): $...$ inline, $$...$$ display.
// MathJax itself is vendored (javascripts/mathjax/tex-chtml.js, version 3.2.2), so the site renders
// formulas offline. The context menu is off: its accessibility explorer would fetch the speech
// rule engine from a CDN.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
    enableMenu: false
  }
};

document$ = window.document$;
if (typeof document$ !== "undefined" && document$.subscribe) {
  document$.subscribe(() => { MathJax.typesetPromise && MathJax.typesetPromise(); });
}
