"""The report's Jinja2 template, inline CSS and JS (kept in Python so they ship with the package as code)."""

from __future__ import annotations

CSS = """
:root{--fg:#1d1f23;--muted:#5c6370;--line:#dde1e6;--accent:#2b6cb0;--bg:#fff;--soft:#f5f7fa}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);
 display:grid;grid-template-columns:230px minmax(0,1fr)}
nav.side{position:sticky;top:0;height:100vh;overflow:auto;border-right:1px solid var(--line);padding:12px;background:var(--soft)}
nav.side h2{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);margin:14px 0 6px}
nav.side a{display:block;padding:2px 6px;border-radius:4px;color:var(--fg);text-decoration:none;font-size:13px;
 white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
nav.side a:hover{background:#e4e9f0}
nav.side a small{color:var(--muted)}
.switch button{display:block;width:100%;text-align:left;margin:2px 0;padding:3px 6px;border:1px solid var(--line);
 border-radius:4px;background:#fff;cursor:pointer;font:inherit;font-size:13px}
.switch button[aria-pressed=true]{background:var(--accent);color:#fff;border-color:var(--accent)}
main{padding:16px 24px;min-width:0}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 10px;border-bottom:1px solid var(--line);padding-bottom:4px}
.muted{color:var(--muted)}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
td,th{border:1px solid var(--line);padding:2px 8px;text-align:left;vertical-align:top}
th{background:var(--soft)}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:16px}
.cards .card{max-width:440px}
.card{border:1px solid var(--line);border-radius:6px;padding:8px}
figure{margin:8px 0}
figcaption{font-size:12px;color:var(--muted);max-width:900px}
img{image-rendering:pixelated;max-width:100%;height:auto}
img.photo{image-rendering:auto}
details.layer{border:1px solid var(--line);border-radius:6px;margin:10px 0;padding:0 12px}
details.layer>summary{cursor:pointer;padding:8px 0;font-weight:600}
details.layer>summary small{font-weight:400;color:var(--muted)}
details.all>summary{cursor:pointer;color:var(--accent);margin:6px 0}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(104px,1fr));gap:6px;max-width:980px}
.tile img{width:100%;display:block}
.tile span{display:block;font-size:11px;color:var(--muted);line-height:1.2}
.notice{background:#fff4e5;border-left:4px solid #dd6b20;padding:6px 10px;margin:8px 0}
.view{display:none}
.row{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.row figure{margin:0;max-width:260px}
.facts{font-size:13px}
p.intro{font-size:15px;max-width:900px;margin:6px 0}
ul.links{background:#eef5ff;border:1px solid #bcd;border-radius:6px;padding:8px 12px 8px 28px;max-width:900px}
ul.links li{margin:2px 0}
section.extra>p,section.extra .group>p{max-width:900px}
section.extra h3{font-size:15px;margin:18px 0 6px}
section.extra pre{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:8px 10px;
 overflow-x:auto;font-size:12px;line-height:1.3}
.pics{display:flex;flex-wrap:wrap;gap:8px 14px;align-items:flex-start}
.pics figure{margin:0;max-width:100%}
.pics figcaption{max-width:520px}
figure.attribution{width:min-content}
figure.tile{width:150px}
figure.attribution img,figure.tile img{max-width:none}
figure.attribution figcaption,figure.tile figcaption{font-size:11px;line-height:1.3}
figcaption a.file{font-size:11px}
figcaption .note{display:block;color:#b42318;margin-top:2px}
"""

JS = """
(function () {
  var body = document.body;
  function choose(i) {
    body.setAttribute('data-image', i);
    document.querySelectorAll('.switch button').forEach(function (b) {
      b.setAttribute('aria-pressed', String(b.getAttribute('data-image') === i));
    });
  }
  document.querySelectorAll('.switch button').forEach(function (b) {
    b.addEventListener('click', function () { choose(b.getAttribute('data-image')); });
  });
  function reveal(id) {
    var el = id && document.getElementById(id);
    if (el && el.tagName === 'DETAILS') { el.open = true; }
  }
  document.querySelectorAll('nav a[href^="#"]').forEach(function (a) {
    a.addEventListener('click', function () { reveal(a.getAttribute('href').slice(1)); });
  });
  window.addEventListener('hashchange', function () { reveal(decodeURIComponent(location.hash.slice(1))); });
  reveal(decodeURIComponent(location.hash.slice(1)));
  var toggle = document.getElementById('toggle-all');
  if (toggle) {
    toggle.addEventListener('click', function () {
      var layers = document.querySelectorAll('details.layer');
      var open = !Array.prototype.every.call(layers, function (d) { return d.open; });
      layers.forEach(function (d) { d.open = open; });
    });
  }
})();
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data: 'self' file:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'">
<title>{{ page.title }}</title>
<style>{{ css|safe }}
{% for im in page.images %}body[data-image="{{ im.index }}"] .view[data-image="{{ im.index }}"]{display:block}
{% endfor %}</style>
</head>
{% macro pic(p, cls="") -%}
{%- set s = src[p.key] -%}
<img src="{{ s.src }}" width="{{ s.width }}" height="{{ s.height }}" alt="{{ p.alt }}" title="{{ p.alt }}"{% if cls %} class="{{ cls }}"{% endif %}{% if s.lazy %} loading="lazy"{% endif %} decoding="async"{% if s.shown %} style="width:{{ s.shown }}px"{% endif %}>
{%- endmacro %}
{% macro figure(p, cls="") -%}
<figure{% if p.kind %} class="{{ p.kind }}"{% endif %}{% for k, v in p.data.items() %} data-{{ k }}="{{ v }}"{% endfor %}>{{ pic(p, cls) }}<figcaption>{{ p.caption }}
{%- if p.file %} <a class="file" href="{{ p.file }}">png</a>{% endif %}
{%- if p.note %}<span class="note" role="note">{{ p.note }}</span>{% endif %}</figcaption></figure>
{%- endmacro %}
{% macro links(items) -%}
<ul class="links">{% for k in items %}<li><a class="link" href="{{ k.href }}">{{ k.text }}</a>{% if k.detail %} — {{ k.detail }}{% endif %}</li>{% endfor %}</ul>
{%- endmacro %}
<body data-image="0">
<nav class="side" aria-label="layers">
  <strong>{{ page.model_name }}</strong>
  <a href="#overview">Overview</a>
  {% for x in page.sections %}<a href="#{{ x.anchor }}">{{ x.title }}</a>
  {% endfor %}
  {% if page.images|length > 1 %}
  <h2>Image</h2>
  <div class="switch" role="group" aria-label="image">
  {% for im in page.images %}<button type="button" data-image="{{ im.index }}" aria-pressed="{{ 'true' if loop.first else 'false' }}">{{ im.index }} · {{ im.name }}</button>
  {% endfor %}</div>
  {% endif %}
  <h2>Layers</h2>
  {% for s in page.layers %}<a href="#{{ s.info.anchor }}" title="{{ s.info.name }} ({{ s.info.type }}) {{ s.info.output_shape }}">{{ s.info.name }} <small>{{ s.info.output_shape }}</small></a>
  {% endfor %}
  {% if page.attributions %}<h2>Attribution</h2><a href="#attribution">Attribution maps</a>{% endif %}
</nav>
<main>
<header id="overview">
  <h1>{{ page.title }}</h1>
  {% if page.intro %}<p class="intro">{{ page.intro }}</p>{% endif %}
  {% if page.links %}{{ links(page.links) }}{% endif %}
  <p class="muted">{{ page.model_name }} · {{ page.framework }} · {{ page.layers|length }} layers shown · {{ page.images|length }} image(s) · made with convscope {{ page.versions.convscope }}</p>
  <div class="cards">
  {% for im in page.images %}
    <div class="card">
      {{ figure(im.picture, "photo") }}
      {% if im.predictions %}
      <table><caption>top-{{ im.predictions|length }} predictions for {{ im.name }}</caption>
      <tr><th>#</th><th>class</th><th>name</th><th>probability</th></tr>
      {% for p in im.predictions %}<tr><td class="num">{{ p.rank }}</td><td class="num">{{ p.index }}</td><td>{{ p.name or "—" }}</td><td class="num">{{ "%.2f%%"|format(100 * p.probability) }}</td></tr>
      {% endfor %}</table>
      {% else %}<p class="muted">no class scores: the model's output is not (N, classes)</p>{% endif %}
    </div>
  {% endfor %}
  </div>
  <div class="cards">
  <div><h2>Preprocessing</h2><table>{% for k, v in page.preprocessing.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table></div>
  <div><h2>Versions</h2><table>{% for k, v in page.versions.items() %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table></div>
  </div>
  {% for n in page.notes %}<p class="notice">{{ n }}</p>{% endfor %}
  <h2>Summary</h2>
  <details open><summary>{{ page.summary.rows|length }} rows · {{ "{:,}".format(page.summary.total_params) }} parameters ({{ "{:,}".format(page.summary.trainable_params) }} trainable)</summary>
  <table class="summary"><tr><th>layer</th><th>type</th><th>output shape</th><th>params</th></tr>
  {% for r in page.summary.rows %}<tr><td>{{ r.name }}</td><td>{{ r.type }}</td><td>{{ shape(r.output_shape) }}</td><td class="num">{{ "{:,}".format(r.params) }}</td></tr>
  {% endfor %}</table></details>
</header>

{% for x in page.sections %}
<section class="extra" id="{{ x.anchor }}">
<h2>{{ x.title }}</h2>
{% if x.text %}<p>{{ x.text }}</p>{% endif %}
{% for t in x.pre %}<pre>{{ t }}</pre>{% endfor %}
{% for t in x.tables %}<table>{% if t.caption %}<caption>{{ t.caption }}</caption>{% endif %}
<tr>{% for h in t.header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for r in t.rows %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{% endfor %}
{% if x.links %}{{ links(x.links) }}{% endif %}
{% if x.pictures %}<div class="pics">{% for p in x.pictures %}{{ figure(p) }}{% endfor %}</div>{% endif %}
{% for g in x.groups %}<div class="group"><h3>{{ g.title }}</h3>{% if g.text %}<p>{{ g.text }}</p>{% endif %}
<div class="pics">{% for p in g.pictures %}{{ figure(p) }}{% endfor %}</div></div>
{% endfor %}
</section>
{% endfor %}

<h2>Layers <button type="button" id="toggle-all">open / close all</button></h2>
{% for s in page.layers %}
<details class="layer" id="{{ s.info.anchor }}" data-layer="{{ s.info.name }}"{% if loop.first %} open{% endif %}>
<summary>{{ s.info.name }} <small>{{ s.info.type }} · output {{ s.info.output_shape }} · {{ "{:,}".format(s.info.params) }} params · {{ s.info.channels }} {{ "units" if s.info.kind == "vector" else "channels" }}</small></summary>
{% for v in s.views %}
<div class="view" data-image="{{ v.image_index }}">
  {% if v.notice %}<p class="notice" role="note">{{ v.notice }}</p>{% endif %}
  {% if v.strip %}{{ figure(v.strip) }}
  <table><caption>top {{ [16, v.ranking|length]|min }} units for image {{ v.image_index }}</caption><tr><th>rank</th><th>unit</th><th>value</th></tr>
  {% for c in v.ranking[:16] %}<tr><td class="num">{{ c.rank }}</td><td class="num">{{ c.channel }}</td><td class="num">{{ "%.4g"|format(c.mean) }}</td></tr>{% endfor %}</table>
  {% endif %}
  {% if v.top %}
  <figure class="top"><div class="tiles">
  {% for t in v.top %}<div class="tile">{{ pic(t.picture) }}<span>{{ t.picture.caption }}</span></div>
  {% endfor %}</div><figcaption>{{ v.top_caption }}</figcaption></figure>
  {% endif %}
  {% if v.mosaic %}<details class="all"><summary>all {{ v.ranking|length }} channels</summary>{{ figure(v.mosaic) }}</details>{% endif %}
  {% for d in v.dataset %}<details class="all dataset"><summary>dataset examples of channel {{ d.channel }}</summary>{{ figure(d.images, "photo") }}{{ figure(d.patches, "photo") }}</details>{% endfor %}
</div>
{% endfor %}
{% if s.kernels %}<details class="all"><summary>kernels</summary>{{ figure(s.kernels) }}</details>{% endif %}
{% if s.features %}{{ figure(s.features, "photo") }}{% endif %}
</details>
{% endfor %}

{% if page.attributions %}
<h2 id="attribution">Attribution</h2>
<p class="muted">Per image and method: input | map | overlay. Deletion AUC (lower is better) and insertion AUC (higher is better) from convscope.metrics, target class probability over the fraction of pixels removed/inserted.</p>
{% for a in page.attributions %}
<div class="attribution card" data-image="{{ a.image_index }}" data-method="{{ a.method }}">
  <p class="facts"><strong>image {{ a.image_index }} · {{ a.method }}</strong>{% if a.layer %} at {{ a.layer }}{% endif %} · class {{ a.target }}{% if a.target_name %} ({{ a.target_name }}){% endif %} · deletion AUC {{ "%.3f"|format(a.deletion_auc) }} · insertion AUC {{ "%.3f"|format(a.insertion_auc) }}{% if a.sanity %} · sanity check: {{ a.sanity }}{% endif %}</p>
  <div class="row">{% for p in a.pictures %}{{ figure(p, "photo" if loop.first else "") }}{% endfor %}</div>
</div>
{% endfor %}
{% endif %}
<footer class="muted"><p>Self-contained: every picture is embedded or beside this file; the page loads nothing from the network.</p></footer>
</main>
<script>{{ js|safe }}</script>
</body>
</html>
"""
